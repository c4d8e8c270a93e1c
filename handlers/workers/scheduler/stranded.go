package scheduler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/logctx"
)

// The stranded-message check is the backstop behind "a message is never
// left in a non-final state with no job that will move it". The dispatch
// workers hold jobs through an outage and record a dead letter before they
// drop a job, but a job can still vanish: JetStream's file store loses
// acknowledged messages after a machine crash (it syncs every two minutes
// by default), an operator purges the queue, a job reaches its delivery
// limit while no worker hears the advisory. Without a job, a queued or
// routed message would wait for its validity (48 h by default) and then
// fail expired.
//
// Every StrandedEvery, the check takes up to BatchSize rows whose job was
// queued more than StrandedAfter ago (the message_schedule_queued index),
// oldest first, and asks the dispatch stream whether that job is still
// there (a work-queue stream keeps a job until it is acknowledged):
//   - still there: the job is live (waiting in a backlog, or being worked
//     on); the row is looked at again after another StrandedAfter. Unless
//     the dispatch consumer has nothing pending and nothing unacknowledged
//     (a nak'ed job waiting for its redelivery counts as unacknowledged):
//     then a job still in the stream is one that reached its delivery
//     limit, and whose dead-letter advisory nobody heard (no worker
//     listened, or it died retrying the write). It is treated as gone, and
//     removed. Under constant load the consumer is never idle, so such a
//     job is found once the load pauses;
//   - gone, and the message is still queued or routed at the row's
//     attempt: the attempt is queued again, as a job with a new dedup id
//     (the old one may still be inside the duplicate window) but the same
//     attempt, so the submission's idempotency key "<id>:<attempt>" keeps
//     a provider from sending it twice;
//   - gone, and the message is past needing a job (submitted and waiting
//     for its receipt, or final and not yet removed by the follower): the
//     row leaves the check;
//   - gone, and the message is waiting to be queued (accepted, retried):
//     the row is made due, so the queuer queues it.

const claimStrandedSQL = `SELECT message_id, account_id, attempt, coalesce(job_seq, 0)
FROM message_schedule WHERE queued_at <= $1 AND due_at IS NULL
ORDER BY queued_at LIMIT $2 FOR UPDATE SKIP LOCKED`

// strandedLoop runs strandedRound every StrandedEvery until ctx ends.
func (s *Scheduler) strandedLoop(ctx context.Context) error {
	for ctx.Err() == nil {
		if eventstore.Sleep(ctx, s.cfg.StrandedEvery); ctx.Err() != nil {
			break
		}
		if _, err := s.strandedRound(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("stranded-message check failed; next round retries", "err", err)
		}
	}
	return ctx.Err()
}

type strandedRow struct {
	bus.Job
	seq uint64
}

// strandedRound is one pass of the check; it returns the messages it
// queued again.
func (s *Scheduler) strandedRound(ctx context.Context) (int, error) {
	stream, err := s.cfg.JetStream.Stream(ctx, s.cfg.Names.DispatchStream())
	if err != nil {
		return 0, fmt.Errorf("dispatch stream: %w", err)
	}
	// Taken before the rows are looked at: every job the check looks at was
	// published long before, so if the consumer had nothing pending or
	// unacknowledged then, a job still in the stream is dead.
	idle := s.dispatchIdle(ctx)
	requeued := 0
	err = s.cfg.Store.InTx(ctx, func(tx *eventstore.Tx) error {
		requeued = 0
		now := s.cfg.Now().UTC()
		rows, err := tx.Query(ctx, claimStrandedSQL, now.Add(-s.cfg.StrandedAfter), s.cfg.BatchSize)
		if err != nil {
			return err
		}
		var claimed []strandedRow
		for rows.Next() {
			var r strandedRow
			var seq int64
			if err := rows.Scan(&r.MessageID, &r.AccountID, &r.Attempt, &seq); err != nil {
				rows.Close()
				return err
			}
			r.seq = uint64(seq)
			claimed = append(claimed, r)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		var live, gone []strandedRow
		var dead []uint64
		for _, r := range claimed {
			ok, err := jobInStream(ctx, stream, r.seq)
			switch {
			case err != nil:
				return err
			case ok && idle:
				dead = append(dead, r.seq)
				gone = append(gone, r)
			case ok:
				live = append(live, r)
			default:
				gone = append(gone, r)
			}
		}
		if len(live) > 0 {
			ids := make([]string, len(live))
			for i, r := range live {
				ids[i] = r.MessageID
			}
			if _, err := tx.Exec(ctx, `UPDATE message_schedule SET queued_at = $2 WHERE message_id = ANY($1::text[])`, ids, now); err != nil {
				return err
			}
		}
		if len(gone) == 0 {
			return nil
		}
		n, err := s.settleStranded(ctx, tx, gone, now)
		if err != nil {
			return err
		}
		requeued = n
		for _, seq := range dead {
			if err := stream.DeleteMsg(ctx, seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
				return fmt.Errorf("remove dead job %d: %w", seq, err)
			}
		}
		return nil
	})
	if err == nil && requeued > 0 {
		s.requeued.Add(float64(requeued))
	}
	return requeued, err
}

// dispatchIdle reports whether the dispatch consumer has no job pending and
// none delivered but unacknowledged.
func (s *Scheduler) dispatchIdle(ctx context.Context) bool {
	c, err := s.cfg.JetStream.Consumer(ctx, s.cfg.Names.DispatchStream(), s.cfg.DispatchConsumer)
	if err != nil {
		return false // no workers yet: nothing was delivered, nothing is dead
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// jobInStream reports whether the dispatch stream still holds the job at
// seq (0: unknown, treated as gone; queuing the attempt again is safe).
func jobInStream(ctx context.Context, stream jetstream.Stream, seq uint64) (bool, error) {
	if seq == 0 {
		return false, nil
	}
	_, err := stream.GetMsg(ctx, seq)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("look up job %d: %w", seq, err)
	}
}

// settleStranded decides, from each message's history, what becomes of a
// row whose job is gone, and queues the stranded attempts again.
func (s *Scheduler) settleStranded(ctx context.Context, tx *eventstore.Tx, gone []strandedRow, now time.Time) (int, error) {
	streams := make([]string, len(gone))
	for i, r := range gone {
		streams[i] = domain.MessageStream(r.MessageID)
	}
	loaded, err := eventstore.ReadStreams(ctx, tx, streams)
	if err != nil {
		return 0, err
	}
	var requeue []strandedRow
	var settled, waiting []string
	for i, r := range gone {
		m, err := eventstore.LoadMessage(loaded[streams[i]])
		if err != nil {
			return 0, err
		}
		switch {
		case (m.State == domain.StateQueued || m.State == domain.StateRouted) && m.Attempt == r.Attempt:
			requeue = append(requeue, r)
		case m.State == domain.StateAccepted || m.State == domain.StateRetried:
			waiting = append(waiting, r.MessageID)
		default:
			settled = append(settled, r.MessageID)
		}
	}
	if len(settled) > 0 {
		if _, err := tx.Exec(ctx, `UPDATE message_schedule SET queued_at = NULL WHERE message_id = ANY($1::text[])`, settled); err != nil {
			return 0, err
		}
	}
	if len(waiting) > 0 {
		// version 0: the queuer reads the history rather than trust the row.
		if _, err := tx.Exec(ctx, `UPDATE message_schedule SET due_at = $2, queued_at = NULL, version = 0
			WHERE message_id = ANY($1::text[])`, waiting, now); err != nil {
			return 0, err
		}
	}
	if len(requeue) == 0 {
		return 0, nil
	}
	seqs, err := s.publishAgain(ctx, requeue)
	if err != nil {
		return 0, err
	}
	ids := make([]string, len(requeue))
	jobSeqs := make([]int64, len(requeue))
	for i, r := range requeue {
		ids[i], jobSeqs[i] = r.MessageID, int64(seqs[i])
		s.log.WarnContext(logctx.With(ctx, "message_id", r.MessageID, "attempt", r.Attempt),
			"stranded message queued again: its job was gone", "old_job_seq", r.seq, "job_seq", seqs[i])
	}
	if _, err := tx.Exec(ctx, markQueuedSQL, ids, jobSeqs, now); err != nil {
		return 0, err
	}
	return len(requeue), nil
}

// publishAgain publishes the same attempts under a dedup id derived from
// the lost job, so that a retried round is deduplicated while a new job is
// not mistaken for the lost one.
func (s *Scheduler) publishAgain(ctx context.Context, rows []strandedRow) ([]uint64, error) {
	futures := make([]jetstream.PubAckFuture, len(rows))
	for i, r := range rows {
		body, _ := json.Marshal(r.Job)
		msg := &nats.Msg{Subject: s.cfg.Names.DispatchSubject(r.MessageID), Data: body, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s:after-%d", r.MsgID(), r.seq))
		f, err := s.cfg.JetStream.PublishMsgAsync(msg)
		if err != nil {
			return nil, fmt.Errorf("publish job: %w", err)
		}
		futures[i] = f
	}
	return awaitAcks(ctx, futures)
}
