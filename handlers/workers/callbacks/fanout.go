package callbacks

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// fanOutSQL matches a batch of events to their accounts' enabled
// endpoints by type, and owes each endpoint a delivery of each match: one
// statement per batch, whatever its size. An endpoint gets the events
// recorded after it was created. The first delivery of a (webhook,
// stream) is ready when nothing of that pair is still owed. A delivery
// already owed (a replay got there first) is not owed twice. It returns
// the pairs whose new rows wait: see promoteAfterFanOut.
const fanOutSQL = `-- name: webhooks.fan_out
INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, next_attempt_at, ready)
SELECT m.webhook_id, m.stream_id, m.position, m.event_id, m.type, now(),
       m.rn = 1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = m.webhook_id AND d.stream_id = m.stream_id)
FROM (SELECT w.webhook_id, u.stream_id, u.position, u.event_id, u.type,
             row_number() OVER (PARTITION BY w.webhook_id, u.stream_id ORDER BY u.position) AS rn
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::timestamptz[])
           AS u(account_id, stream_id, position, event_id, type, recorded_at)
      JOIN webhook_endpoints w ON w.account_id = u.account_id AND w.enabled AND w.deleted_at IS NULL
           AND w.created_at <= u.recorded_at AND u.type = ANY(w.event_types)) m
ORDER BY m.position
ON CONFLICT DO NOTHING
RETURNING webhook_id, stream_id, ready`

// promoteAfterFanOut closes the race of the ready rule without a lock:
// a fan-out that saw a pair's delivery still owed inserts its new row
// waiting, and a recorder that finished that delivery meanwhile, with a
// snapshot from before the fan-out committed, did not see the new row to
// make it ready. So once the fan-out has committed, the pairs it left
// waiting are checked again, and once more after the next batch; what
// still slips through is caught by the orphan check.
func (d *Deliverer) promoteAfterFanOut() {
	// The pairs of this batch, and again those of the one before: a
	// recorder that was still in flight at the first check has most
	// likely committed by the second.
	check := append(d.waiting, d.waitedBefore...)
	d.waitedBefore = append(d.waitedBefore[:0], d.waiting...)
	if len(check) == 0 {
		return
	}
	hooks, streams := make([]string, len(check)), make([]string, len(check))
	for i, k := range check {
		hooks[i], streams[i] = k[0], k[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.cfg.Store.Pool().Exec(ctx, promoteSQL, hooks, streams); err != nil {
		d.log.Warn("webhook deliveries: promote after fan-out", "err", err) // the orphan check will
	}
}

// fanOut is the consumer that owes deliveries. It is partitioned by
// stream (the default key), so one stream's events are fanned out in
// order, and its deliveries commit with its checkpoint.
func (d *Deliverer) fanOut() eventstore.Consumer {
	return eventstore.Consumer{
		// Batches of up to 2,000 events: the fan-out's cost is per batch
		// (a tail read, two statements, a commit) far more than per event,
		// and under load a smaller batch fell behind the tail.
		Name: "webhooks", BatchSize: 4 * d.cfg.BatchSize, Logger: d.log, Linger: 5 * time.Millisecond,
		Filter: eventstore.Filter{Types: domain.WebhookEventTypes()},
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			n := len(batch)
			accounts, streams, types := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
			positions, ids, at := make([]int64, 0, n), make([]uuid.UUID, 0, n), make([]time.Time, 0, n)
			for _, e := range batch {
				if e.AccountID == "" {
					continue
				}
				accounts, streams, types = append(accounts, e.AccountID), append(streams, e.StreamID), append(types, e.Type)
				positions, ids, at = append(positions, e.Position), append(ids, e.ID), append(at, e.RecordedAt)
			}
			if len(accounts) == 0 {
				return nil
			}
			rows, err := tx.Query(ctx, fanOutSQL, accounts, streams, positions, ids, types, at)
			if err != nil {
				return fmt.Errorf("fan out: %w", err)
			}
			d.waiting = d.waiting[:0]
			seen := map[[2]string]bool{}
			owed := 0
			for rows.Next() {
				var k [2]string
				var ready bool
				if err := rows.Scan(&k[0], &k[1], &ready); err != nil {
					rows.Close()
					return fmt.Errorf("fan out: %w", err)
				}
				owed++
				if !ready && !seen[k] {
					seen[k] = true
					d.waiting = append(d.waiting, k)
				}
			}
			if err := rows.Err(); err != nil {
				return fmt.Errorf("fan out: %w", err)
			}
			d.metrics.owed.Add(float64(owed))
			return nil
		},
		Committed: func([]eventstore.RecordedEvent) {
			d.promoteAfterFanOut()
			d.Wake()
		},
	}
}
