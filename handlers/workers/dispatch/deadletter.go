package dispatch

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
)

// deadLetters turns JetStream's max-deliveries advisories into explicit
// MessageFailed{dead_lettered} events and removes the job from the queue.
// A job that reached MaxDeliver is otherwise left in the stream with only
// an advisory to show for it: a silent stall. (Should an advisory be
// missed while no worker listens, the job stays in the stream; the
// scheduler's stranded-message check finds it once the queue is idle and
// queues the attempt again.)
func (w *Worker) deadLetters(ctx context.Context) {
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", w.cfg.Names.DispatchStream(), w.cfg.Consumer)
	ch := make(chan *nats.Msg, 256)
	sub, err := w.cfg.JetStream.Conn().ChanSubscribe(subject, ch)
	if err != nil {
		w.log.Error("cannot watch dead letters", "err", err)
		return
	}
	defer func() { _ = sub.Unsubscribe() }()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-ch:
			var adv struct {
				StreamSeq  uint64 `json:"stream_seq"`
				Deliveries int    `json:"deliveries"`
			}
			if err := json.Unmarshal(msg.Data, &adv); err != nil || adv.StreamSeq == 0 {
				continue
			}
			w.recordDeadLetter(ctx, adv.StreamSeq, adv.Deliveries)
		}
	}
}

// recordDeadLetter retries deadLetter until it succeeds or ctx ends. The
// advisory comes once: a dead-letter write given up on (the store away)
// would leave the message waiting for a job JetStream no longer delivers.
// The job is removed only after MessageFailed is committed, so a retry
// after a partial success finds the message final and only removes it.
func (w *Worker) recordDeadLetter(ctx context.Context, seq uint64, deliveries int) {
	backoff := 100 * time.Millisecond
	for {
		err := w.deadLetter(ctx, seq, deliveries)
		if err == nil || ctx.Err() != nil {
			return
		}
		w.log.Warn("dead-lettering a job failed; retrying", "stream_seq", seq, "err", err, "backoff", backoff)
		if eventstore.Sleep(ctx, backoff); ctx.Err() != nil {
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (w *Worker) deadLetter(ctx context.Context, seq uint64, deliveries int) error {
	stream, err := w.cfg.JetStream.Stream(ctx, w.cfg.Names.DispatchStream())
	if err != nil {
		return err
	}
	raw, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil // removed by an earlier try, or never there to fail
	}
	if err != nil {
		return fmt.Errorf("get job %d: %w", seq, err)
	}
	var job bus.Job
	if err := json.Unmarshal(raw.Data, &job); err != nil {
		w.log.Error("malformed dead-lettered job, removing it", "stream_seq", seq, "err", err)
		return stream.DeleteMsg(ctx, seq)
	}
	recs, err := w.cfg.Store.ReadStream(ctx, domain.MessageStream(job.MessageID), 1)
	if err != nil {
		return err
	}
	m, err := eventstore.LoadMessage(recs)
	if err != nil {
		return err
	}
	waiting := (m.State == domain.StateAccepted && job.Attempt == 1) ||
		(m.State == domain.StateRetried && job.Attempt == m.NextAttempt)
	if !m.State.Final() && (m.Attempt == job.Attempt || waiting) {
		// The job's attempt never got done (or never started: the message is
		// still waiting for it): say so in the message's history rather
		// than leave it waiting for a job that is gone.
		ev, err := m.Fail(m.Attempt, domain.Failure{Code: domain.CodeDeadLettered, Stage: domain.StageSubmit,
			Reason:   fmt.Sprintf("the dispatch job failed %d deliveries (queue limit); see the worker log for why", deliveries),
			Provider: m.Provider}, nil, w.cfg.Now().UTC())
		if err != nil {
			return err
		}
		if _, err := w.cfg.Store.Append(ctx, domain.MessageStream(job.MessageID), eventstore.Exact(m.Version),
			eventstore.MustEvent(ev, eventstore.FollowUp(recs, "worker"))); err != nil {
			return err
		}
		w.m.deadLettered.Inc()
		w.log.Error("job dead-lettered; message failed", "message_id", job.MessageID, "attempt", job.Attempt, "deliveries", deliveries)
	}
	return stream.DeleteMsg(ctx, seq)
}
