// Package dispatch runs the workers that take dispatch jobs off the
// JetStream work queue and carry one attempt of a message through routing
// and provider submission: MessageRouted, then MessageSubmitted,
// MessageRetried or MessageFailed.
//
// A job is acknowledged only after its events are committed. Every
// submission carries the idempotency key "<message id>:<attempt>", so a
// redelivered job (the worker died after routing, after submitting, or
// before its events committed) resubmits the same attempt and the provider
// answers from its record instead of sending twice. A submission whose
// outcome is unknown (timeout) is never retried as a new attempt for the
// same reason: the job is redelivered and the same attempt resubmitted.
package dispatch

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/logctx"
	"github.com/afterok/afterok/handlers/provider"
)

// ParkedReceipts applies receipts that arrived before their submission was
// recorded (the receipt intake implements it).
type ParkedReceipts interface {
	ApplyParked(ctx context.Context, messageIDs []string) error
}

// Hooks let fault tests stop a worker at the dangerous points. Each runs
// with the batch's context; a hook that cancels it simulates a crash there.
type Hooks struct {
	AfterRouted func(ctx context.Context)
	AfterSubmit func(ctx context.Context)
}

// Config configures a Worker.
type Config struct {
	Store     *eventstore.Store
	JetStream jetstream.JetStream
	Names     bus.Names
	Providers map[string]provider.Provider
	Routes    *routing.Table
	Breaker   *routing.Breaker
	Retry     routing.RetryPolicy
	Receipts  ParkedReceipts
	Now       func() time.Time
	Logger    *slog.Logger
	// Registerer receives the worker's metrics (nil: none).
	Registerer prometheus.Registerer
	// Consumer is the durable pull consumer's name (default "dispatch").
	Consumer string
	// BatchSize is the jobs fetched and processed together (default 200).
	BatchSize int
	// Fetchers is the number of concurrent fetch-and-process loops
	// (default 2).
	Fetchers int
	AckWait  time.Duration // default 30 s
	// MaxDeliver bounds redeliveries; a job that reaches it is turned into
	// MessageFailed{dead_lettered} (default 10).
	MaxDeliver int
	Hooks      Hooks
}

// Worker is a pool of dispatch loops.
type Worker struct {
	cfg Config
	log *slog.Logger
	m   *metrics
	// breaker is not safe for concurrent use: mu serialises it.
	mu sync.Mutex
}

// New returns a Worker, or an error naming what cfg lacks.
func New(cfg Config) (*Worker, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("dispatch: Config.Store is required")
	case cfg.JetStream == nil:
		return nil, errors.New("dispatch: Config.JetStream is required")
	case cfg.Routes == nil || cfg.Breaker == nil:
		return nil, errors.New("dispatch: Config.Routes and Config.Breaker are required")
	case cfg.BatchSize < 0 || cfg.Fetchers < 0 || cfg.AckWait < 0 || cfg.MaxDeliver < 0:
		return nil, errors.New("dispatch: Config.BatchSize, Fetchers, AckWait and MaxDeliver must not be negative")
	}
	if cfg.Now == nil { // a func is not comparable, so not cmp.Or's
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.Consumer = cmp.Or(cfg.Consumer, "dispatch")
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 200)
	cfg.Fetchers = cmp.Or(cfg.Fetchers, 2)
	cfg.AckWait = cmp.Or(cfg.AckWait, 30*time.Second)
	cfg.MaxDeliver = cmp.Or(cfg.MaxDeliver, 10)
	return &Worker{cfg: cfg, log: logctx.Wrap(cfg.Logger).With("role", "dispatch"), m: newMetrics(cfg.Registerer)}, nil
}

// Run consumes jobs until ctx ends.
func (w *Worker) Run(ctx context.Context) error {
	var cons jetstream.Consumer
	for {
		var err error
		cons, err = w.cfg.JetStream.CreateOrUpdateConsumer(ctx, w.cfg.Names.DispatchStream(), jetstream.ConsumerConfig{
			Durable: w.cfg.Consumer, AckPolicy: jetstream.AckExplicitPolicy, AckWait: w.cfg.AckWait,
			MaxDeliver: w.cfg.MaxDeliver, MaxAckPending: w.cfg.BatchSize * w.cfg.Fetchers * 4,
			Description: "afterok dispatch workers",
		})
		if err == nil {
			break
		}
		w.log.Warn("dispatch consumer not ready, retrying", "err", err)
		if eventstore.Sleep(ctx, time.Second); ctx.Err() != nil {
			return ctx.Err()
		}
	}
	var wg sync.WaitGroup
	for range w.cfg.Fetchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.fetchLoop(ctx, cons)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.deadLetters(ctx)
	}()
	wg.Wait()
	return ctx.Err()
}

func (w *Worker) fetchLoop(ctx context.Context, cons jetstream.Consumer) {
	for ctx.Err() == nil {
		batch, err := cons.Fetch(w.cfg.BatchSize, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			if ctx.Err() == nil {
				w.log.Warn("fetch jobs", "err", err)
				eventstore.Sleep(ctx, 500*time.Millisecond)
			}
			continue
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && ctx.Err() == nil && len(msgs) == 0 {
			w.log.Warn("fetch jobs", "err", err)
		}
		if len(msgs) > 0 {
			w.process(ctx, msgs)
		}
	}
}

// maxConflictReruns bounds how often one batch is run again at once after
// losing an append race; past it, the jobs are left to redelivery.
const maxConflictReruns = 5

// task is one job in flight through a batch.
type task struct {
	msg  jetstream.Msg
	job  bus.Job
	recs []eventstore.RecordedEvent
	m    domain.Message
	// what to do with the job when the batch is done
	ack    bool
	nakFor time.Duration
	// submission, when the attempt gets as far as the provider
	submit   bool
	provider string
}

// process carries a batch of jobs as far as each can go.
func (w *Worker) process(ctx context.Context, msgs []jetstream.Msg) {
	start := time.Now()
	tasks := make([]*task, 0, len(msgs))
	for _, m := range msgs {
		t := &task{msg: m}
		if err := json.Unmarshal(m.Data(), &t.job); err != nil || t.job.MessageID == "" {
			w.log.Error("malformed dispatch job, terminating it", "err", err, "data", string(m.Data()))
			_ = m.Term()
			continue
		}
		tasks = append(tasks, t)
	}
	for conflicts := 0; ; {
		err := w.run(ctx, tasks)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return // unacknowledged: AckWait hands the jobs to another worker
		}
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) && conflicts < maxConflictReruns {
			// Someone else appended to one of the batch's messages between
			// its load and the batch's append (a cancel, the expirer, a
			// receipt): the append is atomic, so none of the batch's events
			// was written. Run the batch again from the store's state, as a
			// redelivery would, without spending a delivery or waiting: the
			// moved message is triaged anew (a canceled one is acknowledged,
			// never routed) and the others go on.
			conflicts++
			w.m.conflictReruns.Inc()
			for _, t := range tasks {
				*t = task{msg: t.msg, job: t.job}
			}
			continue
		}
		if w.storeReachable(ctx) {
			w.log.Warn("dispatch batch failed; jobs will be redelivered", "jobs", len(tasks), "err", err)
			w.m.batchErrors.Inc()
			// Unfinished jobs are nak'ed for a prompt retry; that spends one
			// of their deliveries, which is right for a fault of the jobs
			// (a conflict, a bad row) and not for an outage (below).
			for _, t := range tasks {
				if !t.ack {
					_ = t.msg.NakWithDelay(time.Second)
				}
			}
			return
		}
		// The store is away. A nak would spend a delivery per retry, and
		// MaxDeliver counts deliveries, so an outage of a few seconds would
		// dead-letter messages that were never at fault. Instead the batch
		// is held (kept in progress, so it is not redelivered) and no new
		// one fetched until the store answers; then it runs again from the
		// store's state, which is what a redelivery would do.
		w.log.Warn("store unreachable; holding the batch until it is back", "jobs", len(tasks), "err", err)
		w.m.outageHolds.Inc()
		if !w.waitForStore(ctx, tasks) {
			return
		}
		for _, t := range tasks {
			*t = task{msg: t.msg, job: t.job}
		}
	}
	for _, t := range tasks {
		switch {
		case t.ack:
			_ = t.msg.Ack()
		case t.nakFor > 0:
			_ = t.msg.NakWithDelay(t.nakFor)
		default:
			_ = t.msg.Nak()
		}
	}
	w.m.batchSeconds.Observe(time.Since(start).Seconds())
}

// run is process's work; an error leaves the unfinished jobs to redelivery.
func (w *Worker) run(ctx context.Context, tasks []*task) error {
	if err := w.load(ctx, tasks); err != nil {
		return err
	}
	var route []*task
	for _, t := range tasks {
		w.triage(t)
		if !t.ack && t.nakFor == 0 {
			route = append(route, t)
		}
	}
	if len(route) == 0 {
		return nil
	}
	// Routing: decide per message, record every decision in one commit.
	var routed []eventstore.StreamAppend
	var routedTasks []*task
	now := w.cfg.Now().UTC()
	for _, t := range route {
		if t.m.State == domain.StateRouted { // a redelivery after the route was recorded
			t.submit, t.provider = true, t.m.Provider
			continue
		}
		ev, ok := w.decide(t, now)
		if !ok {
			continue
		}
		routed = append(routed, eventstore.StreamAppend{Stream: domain.MessageStream(t.job.MessageID),
			Expected: eventstore.Exact(t.m.Version), Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.FollowUp(t.recs, "worker"))}})
		routedTasks = append(routedTasks, t)
		if err := t.m.Apply(ev); err != nil {
			return err
		}
	}
	if len(routed) > 0 {
		if _, err := w.cfg.Store.AppendMulti(ctx, routed); err != nil {
			return fmt.Errorf("record routing: %w", err)
		}
		for _, t := range routedTasks {
			if !t.submit {
				t.ack = true // a routing failure was the attempt's end
			}
		}
	}
	if w.cfg.Hooks.AfterRouted != nil {
		w.cfg.Hooks.AfterRouted(ctx)
	}
	return w.submit(ctx, tasks)
}

// load reads every job's message stream in one query.
func (w *Worker) load(ctx context.Context, tasks []*task) error {
	streams := make([]string, len(tasks))
	for i, t := range tasks {
		streams[i] = domain.MessageStream(t.job.MessageID)
	}
	loaded, err := w.cfg.Store.ReadStreams(ctx, streams)
	if err != nil {
		return err
	}
	for i, t := range tasks {
		t.recs = loaded[streams[i]]
		m, err := eventstore.LoadMessage(t.recs)
		if err != nil {
			return err
		}
		t.m = m
	}
	return nil
}

// triage decides what a job needs given where its message stands.
func (w *Worker) triage(t *task) {
	m, j := &t.m, t.job
	switch {
	case len(t.recs) == 0:
		w.log.Error("dispatch job for a message that does not exist", "message_id", j.MessageID)
		t.ack = true
	case m.State.Final():
		// Delivered, failed or canceled: nothing is left to do. A canceled
		// message's job ends here, before any route or provider sees it.
		t.ack = true
	case j.Attempt < m.Attempt, j.Attempt == m.Attempt && m.State == domain.StateSubmitted:
		t.ack = true // a stale or finished attempt
	case m.State == domain.StateAccepted || m.State == domain.StateScheduled || m.State == domain.StateRetried || j.Attempt > m.Attempt:
		// The job is stored but the scheduler has not recorded it as queued
		// yet (it does so right after the stream acknowledged it, which
		// under load can take seconds). Back off by delivery count, so that
		// the wait does not use up the job's deliveries: 0.25 s doubling to
		// 15 s gives the record about a minute before MaxDeliver.
		t.nakFor = notYetQueuedDelay(t.msg)
	}
}

func notYetQueuedDelay(msg jetstream.Msg) time.Duration {
	n := uint64(1)
	if md, err := msg.Metadata(); err == nil && md.NumDelivered > 0 {
		n = md.NumDelivered
	}
	d := 250 * time.Millisecond << min(n-1, 6)
	return min(d, 15*time.Second)
}

// decide routes one queued attempt. It returns the event to record and
// whether the attempt goes on to submission.
func (w *Worker) decide(t *task, now time.Time) (domain.Event, bool) {
	m := &t.m
	if m.Expired(now) {
		ev, err := m.Expire(now)
		return ev, err == nil
	}
	w.mu.Lock()
	decision, failure := routing.Choose(w.cfg.Routes, routing.Request{MessageID: m.ID, Attempt: m.Attempt, To: m.To,
		Country: m.Country, Excluded: m.Excluded}, w.cfg.Breaker.Health(now))
	probeOK := failure != nil || w.cfg.Breaker.Allow(decision.Provider, now)
	w.mu.Unlock()
	if !probeOK {
		t.nakFor = time.Second // a half-open circuit's probe slot was just taken
		return nil, false
	}
	if failure != nil {
		ev, err := w.cfg.Retry.AfterFailure(m, m.Attempt, *failure, nil, now)
		return ev, err == nil
	}
	if _, ok := w.cfg.Providers[decision.Provider]; !ok {
		ev, err := m.Fail(m.Attempt, domain.Failure{Code: domain.CodeNoRoute, Stage: domain.StageRouting,
			Reason: fmt.Sprintf("route %s names provider %s, which is not configured", decision.RouteID, decision.Provider)}, nil, now)
		return ev, err == nil
	}
	ev, err := m.Route(decision, now)
	if err != nil {
		w.log.Error("route refused", "message_id", m.ID, "err", err)
		return nil, false
	}
	t.submit, t.provider = true, decision.Provider
	return ev, true
}
