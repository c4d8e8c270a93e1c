package scheduler

import (
	"context"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

const claimExpiredSQL = `SELECT message_id FROM message_schedule WHERE expires_at <= $1
ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED`

// expireRound fails the messages whose validity elapsed before a final
// state. A message that reached a final state meanwhile is left alone.
func (s *Scheduler) expireRound(ctx context.Context) (int, error) {
	n := 0
	err := s.cfg.Store.InTx(ctx, func(tx *eventstore.Tx) error {
		now := s.cfg.Now().UTC()
		rows, err := tx.Query(ctx, claimExpiredSQL, now, s.cfg.BatchSize)
		if err != nil {
			return err
		}
		var ids, streams []string
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			ids, streams = append(ids, id), append(streams, domain.MessageStream(id))
		}
		if err := rows.Err(); err != nil {
			return err
		}
		n = len(ids)
		if n == 0 {
			return nil
		}
		loaded, err := eventstore.ReadStreams(ctx, tx, streams)
		if err != nil {
			return err
		}
		var appends []eventstore.StreamAppend
		for _, st := range streams {
			recs := loaded[st]
			m, err := eventstore.LoadMessage(recs)
			if err != nil {
				return err
			}
			if m.State.Final() || m.State == domain.StateNew {
				continue
			}
			// The claim compared expires_at with now already.
			ev, err := m.Expire(now)
			if err != nil {
				return err
			}
			appends = append(appends, eventstore.StreamAppend{Stream: st, Expected: eventstore.Exact(m.Version),
				Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.FollowUp(recs, "scheduler"))}})
		}
		if len(appends) > 0 {
			if _, err := tx.Append(ctx, appends...); err != nil {
				return err
			}
		}
		_, err = tx.Exec(ctx, deleteScheduleSQL, ids)
		if err == nil {
			s.expired.Add(float64(len(appends)))
		}
		return err
	})
	return n, err
}
