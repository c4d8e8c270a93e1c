package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/logctx"
	"github.com/afterok/afterok/handlers/provider"
)

// submit sends every routed attempt to its provider (one batch call per
// provider, providers in parallel), records the outcomes in one commit,
// then applies receipts that were waiting for these submissions.
func (w *Worker) submit(ctx context.Context, tasks []*task) error {
	byProvider := map[string][]*task{}
	for _, t := range tasks {
		if t.submit {
			byProvider[t.provider] = append(byProvider[t.provider], t)
		}
	}
	if len(byProvider) == 0 {
		return nil
	}
	outcomes := map[*task]provider.Outcome{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, ts := range byProvider {
		p := w.cfg.Providers[name]
		subs := make([]provider.Submission, len(ts))
		for i, t := range ts {
			m := &t.m
			subs[i] = provider.Submission{MessageID: m.ID, Attempt: m.Attempt, To: m.To, From: m.From, Body: m.Body, Segments: m.Segments}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			res := p.Submit(ctx, subs)
			w.m.submitSeconds.WithLabelValues(name).Observe(time.Since(start).Seconds())
			mu.Lock()
			for i, t := range ts {
				outcomes[t] = res[i]
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	if ctx.Err() != nil {
		return ctx.Err() // the outcomes may be unknown: redelivery resubmits the same attempts
	}
	if w.cfg.Hooks.AfterSubmit != nil {
		w.cfg.Hooks.AfterSubmit(ctx)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	now := w.cfg.Now().UTC()
	var appends []eventstore.StreamAppend
	var recorded, submitted []*task
	var submittedIDs []string
	for _, t := range tasks {
		o, ok := outcomes[t]
		if !ok {
			continue
		}
		ev := w.outcome(ctx, t, o, now)
		if ev == nil {
			continue
		}
		appends = append(appends, eventstore.StreamAppend{Stream: domain.MessageStream(t.job.MessageID),
			Expected: eventstore.Exact(t.m.Version), Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.FollowUp(t.recs, "worker"))}})
		recorded = append(recorded, t)
		if _, ok := ev.(domain.MessageSubmitted); ok {
			submitted = append(submitted, t)
			submittedIDs = append(submittedIDs, t.job.MessageID)
		}
	}
	if len(appends) > 0 {
		if _, err := w.cfg.Store.AppendMulti(ctx, appends); err != nil {
			return fmt.Errorf("record submissions: %w", err)
		}
	}
	for _, t := range recorded {
		t.ack = true
	}
	w.m.submitted.Add(float64(len(submitted)))
	if len(submittedIDs) > 0 && w.cfg.Receipts != nil {
		// Best effort: the intake's sweeper applies what this misses.
		if err := w.cfg.Receipts.ApplyParked(ctx, submittedIDs); err != nil && ctx.Err() == nil {
			w.log.Warn("apply parked receipts", "messages", len(submittedIDs), "err", err)
		}
	}
	return nil
}

// outcome turns a provider's answer into the attempt's event, feeding the
// circuit breaker on the way. It returns nil when the outcome is unknown
// and the job must come back to resubmit the same attempt.
func (w *Worker) outcome(ctx context.Context, t *task, o provider.Outcome, now time.Time) domain.Event {
	m := &t.m
	ctx = logctx.With(ctx, "message_id", m.ID, "attempt", m.Attempt, "provider", t.provider)
	if o.Err == nil {
		w.record(t.provider, true, now)
		ev, err := m.Submit(o.Result.ProviderMessageID, o.Result.Latency, now)
		if err != nil {
			w.log.ErrorContext(ctx, "submission not recordable", "err", err)
			return nil
		}
		return ev
	}
	var pe *provider.Error
	if !errors.As(o.Err, &pe) {
		w.log.ErrorContext(ctx, "provider returned an untyped error; will resubmit", "err", o.Err)
		t.nakFor = 2 * time.Second
		return nil
	}
	f := pe.Failure
	f.Provider = t.provider
	w.m.failures.WithLabelValues(t.provider, f.Code).Inc()
	if f.Code == domain.CodeTimeout {
		// The provider may have accepted it. Resubmitting the same attempt
		// (same idempotency key) is safe; moving on to the next attempt is
		// not, it could send the message twice.
		w.record(t.provider, false, now)
		w.log.WarnContext(ctx, "submission outcome unknown; resubmitting the same attempt", "err", o.Err)
		t.nakFor = 2 * time.Second
		return nil
	}
	// Only the provider's own trouble feeds its breaker: a bad number is
	// not a sign of a sick provider.
	w.record(t.provider, f.Permanent, now)
	if f.Permanent {
		w.log.InfoContext(ctx, "submission refused permanently", "code", f.Code, "reason", f.Reason)
	} else {
		if pe.RetryAfter > 0 {
			f.Reason += fmt.Sprintf(" (provider asked to retry after %s)", pe.RetryAfter)
		}
		w.log.InfoContext(ctx, "submission failed transiently", "code", f.Code, "reason", f.Reason)
	}
	ev, err := w.cfg.Retry.AfterFailure(m, m.Attempt, f, nil, now)
	if err != nil {
		return nil
	}
	return ev
}

func (w *Worker) record(provider string, ok bool, now time.Time) {
	w.mu.Lock()
	w.cfg.Breaker.Record(provider, ok, now)
	w.mu.Unlock()
}
