// Package scheduler turns accepted messages and due retries into dispatch
// jobs, and expires messages whose validity elapsed.
//
// "Queued" means durably queued: MessageQueued is appended only after
// JetStream acknowledged the job. The scheduler never keeps per-message
// state in memory: it follows the event tail into the message_schedule
// table (in the same transaction as its checkpoint) and works from there,
// so a restart at any point resumes where it was.
package scheduler

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/logctx"
)

// Config configures a Scheduler.
type Config struct {
	Store      *eventstore.Store
	JetStream  jetstream.JetStream
	Names      bus.Names
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// BatchSize bounds the rows one round queues or expires (default 500).
	BatchSize int
	// Poll is how often the queuer and expirer look for due rows when
	// nothing woke them (default 100 ms).
	Poll time.Duration
	// StrandedAfter is how long after its job was queued a message that is
	// still queued or routed is checked for a live job (default 2 min);
	// StrandedEvery is how often the check runs (default 15 s). See
	// stranded.go.
	StrandedAfter time.Duration
	StrandedEvery time.Duration
	// DispatchConsumer is the dispatch workers' consumer (default
	// "dispatch"), which the check asks whether it is idle.
	DispatchConsumer string
}

// Scheduler runs the tail follower, the queuer and the expirer.
type Scheduler struct {
	cfg      Config
	log      *slog.Logger
	queued   prometheus.Counter
	expired  prometheus.Counter
	due      prometheus.Gauge
	requeued prometheus.Counter
}

// New returns a Scheduler, or an error naming what cfg lacks.
func New(cfg Config) (*Scheduler, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("scheduler: Config.Store is required")
	case cfg.JetStream == nil:
		return nil, errors.New("scheduler: Config.JetStream is required")
	case cfg.BatchSize < 0 || cfg.Poll < 0 || cfg.StrandedAfter < 0 || cfg.StrandedEvery < 0:
		return nil, errors.New("scheduler: Config.BatchSize, Poll, StrandedAfter and StrandedEvery must not be negative")
	}
	if cfg.Now == nil { // a func is not comparable, so not cmp.Or's
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 500)
	cfg.Poll = cmp.Or(cfg.Poll, 100*time.Millisecond)
	cfg.StrandedAfter = cmp.Or(cfg.StrandedAfter, 2*time.Minute)
	cfg.StrandedEvery = cmp.Or(cfg.StrandedEvery, 15*time.Second)
	cfg.DispatchConsumer = cmp.Or(cfg.DispatchConsumer, "dispatch")
	s := &Scheduler{cfg: cfg, log: logctx.Wrap(cfg.Logger).With("role", "scheduler"),
		queued:  prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_scheduler_jobs_queued_total", Help: "Dispatch jobs queued (MessageQueued appended)."}),
		expired: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_scheduler_messages_expired_total", Help: "Messages failed because their validity elapsed."}),
		due:     prometheus.NewGauge(prometheus.GaugeOpts{Name: "afterok_scheduler_due_rows", Help: "Rows the last queuer round found due."}),
		requeued: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_scheduler_stranded_requeued_total",
			Help: "Queued or routed messages found without a live job and queued again."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(s.queued, s.expired, s.due, s.requeued)
	}
	return s, nil
}

// Run runs until ctx ends.
func (s *Scheduler) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				s.log.Error("scheduler loop stopped", "loop", name, "err", err)
			}
		}()
	}
	run("follow", s.follow)
	// Two queuers: a round spends most of its time waiting (for JetStream's
	// acknowledgements, for PostgreSQL), and SKIP LOCKED keeps them apart.
	for range 2 {
		run("queue", func(ctx context.Context) error { return s.loop(ctx, s.queueRound) })
	}
	run("expire", func(ctx context.Context) error { return s.loop(ctx, s.expireRound) })
	run("stranded", s.strandedLoop)
	wg.Wait()
	return ctx.Err()
}

// follow keeps message_schedule in step with the event tail.
func (s *Scheduler) follow(ctx context.Context) error {
	return s.cfg.Store.Run(ctx, eventstore.Consumer{
		Name: "scheduler",
		Filter: eventstore.Filter{Types: domain.TypesOf(domain.MessageAccepted{}, domain.MessageRetried{}, domain.MessageDelivered{},
			domain.MessageFailed{}, domain.MessageCanceled{})},
		Logger: s.log,
		Handle: s.apply,
	})
}

const (
	insertScheduleSQL = `INSERT INTO message_schedule (message_id, account_id, attempt, due_at, expires_at,
    version, last_type, caused_by, order_id, trace_id)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::timestamptz[], $5::timestamptz[],
    $6::int[], $7::text[], $8::uuid[], $9::text[], $10::text[])
ON CONFLICT (message_id) DO NOTHING`
	retryScheduleSQL = `UPDATE message_schedule s SET attempt = u.attempt, due_at = u.due_at,
    version = u.version, last_type = u.last_type, caused_by = u.caused_by, queued_at = NULL, job_seq = NULL
FROM unnest($1::text[], $2::int[], $3::timestamptz[], $4::int[], $5::text[], $6::uuid[])
    AS u(message_id, attempt, due_at, version, last_type, caused_by)
WHERE s.message_id = u.message_id`
	deleteScheduleSQL = `DELETE FROM message_schedule WHERE message_id = ANY($1::text[])`
)

// apply folds one batch of tail events into message_schedule.
func (s *Scheduler) apply(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
	type row struct {
		account, order, trace string
		attempt, version      int
		lastType              string
		causedBy              uuid.UUID
		due, expires          time.Time
		inserted, final       bool
		retried               bool
	}
	rows := map[string]*row{}
	var order []string
	get := func(id string) *row {
		r := rows[id]
		if r == nil {
			r = &row{}
			rows[id] = r
			order = append(order, id)
		}
		return r
	}
	for _, rec := range batch {
		ev, err := rec.Decode()
		if err != nil {
			return err
		}
		switch e := ev.(type) {
		case domain.MessageAccepted:
			r := get(e.MessageID)
			r.inserted, r.account, r.attempt, r.due, r.expires = true, e.AccountID, 1, e.At, e.ExpiresAt
			if e.Scheduled() {
				// Due at its send_at: until then the row sits in the due
				// index beyond every round's range (see claimDueSQL).
				r.due = e.SendAt
			}
			r.order, r.trace, r.version, r.lastType, r.causedBy = e.OrderID, rec.Metadata.TraceID, rec.Version, rec.Type, rec.ID
		case domain.MessageRetried:
			id, _ := domain.MessageIDOf(rec.StreamID)
			r := get(id)
			r.retried, r.attempt, r.due = true, e.NextAttempt, e.NotBefore
			r.version, r.lastType, r.causedBy = rec.Version, rec.Type, rec.ID
		case domain.MessageDelivered, domain.MessageFailed, domain.MessageCanceled:
			id, _ := domain.MessageIDOf(rec.StreamID)
			get(id).final = true
		}
	}
	var insIDs, insAcc, insOrder, insTrace, insType []string
	var insAtt, insVer []int32
	var insCause []uuid.UUID
	var insDue, insExp []time.Time
	var updIDs, delIDs, updType []string
	var updAtt, updVer []int32
	var updCause []uuid.UUID
	var updDue []time.Time
	for _, id := range order {
		r := rows[id]
		switch {
		case r.final:
			delIDs = append(delIDs, id)
		case r.inserted:
			insIDs, insAcc, insAtt = append(insIDs, id), append(insAcc, r.account), append(insAtt, int32(r.attempt))
			insDue, insExp = append(insDue, r.due), append(insExp, r.expires)
			insOrder, insTrace, insType = append(insOrder, r.order), append(insTrace, r.trace), append(insType, r.lastType)
			insVer, insCause = append(insVer, int32(r.version)), append(insCause, r.causedBy)
		case r.retried:
			updIDs, updAtt, updDue = append(updIDs, id), append(updAtt, int32(r.attempt)), append(updDue, r.due)
			updVer, updType, updCause = append(updVer, int32(r.version)), append(updType, r.lastType), append(updCause, r.causedBy)
		}
	}
	b := &pgxBatch{}
	if len(insIDs) > 0 {
		b.add(insertScheduleSQL, insIDs, insAcc, insAtt, insDue, insExp, insVer, insType, insCause, insOrder, insTrace)
	}
	// A message accepted and retried within one batch was inserted above
	// with attempt 1; the update moves it on.
	for _, id := range order {
		if r := rows[id]; r.inserted && r.retried && !r.final {
			updIDs, updAtt, updDue = append(updIDs, id), append(updAtt, int32(r.attempt)), append(updDue, r.due)
			updVer, updType, updCause = append(updVer, int32(r.version)), append(updType, r.lastType), append(updCause, r.causedBy)
		}
	}
	if len(updIDs) > 0 {
		b.add(retryScheduleSQL, updIDs, updAtt, updDue, updVer, updType, updCause)
	}
	if len(delIDs) > 0 {
		b.add(deleteScheduleSQL, delIDs)
	}
	return b.send(ctx, tx)
}

// loop runs round until ctx ends, pausing when a round found nothing.
func (s *Scheduler) loop(ctx context.Context, round func(context.Context) (int, error)) error {
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		n, err := round(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			s.log.Warn("scheduler round failed, retrying", "err", err, "backoff", backoff)
			eventstore.Sleep(ctx, backoff)
		case n == 0:
			backoff = 0
			eventstore.Sleep(ctx, s.cfg.Poll)
		default:
			backoff = 0
		}
	}
	return ctx.Err()
}

// claimDueSQL reads the partial index message_schedule_due from its low
// end and stops after $2 rows: rows due later (scheduled messages waiting
// for their send_at, retries waiting for their backoff) are never visited,
// however many there are (TestClaimDueDoesNotScanScheduledRows).
const claimDueSQL = `-- name: scheduler.claim_due
SELECT message_id, account_id, attempt, version, last_type, caused_by, order_id, trace_id
FROM message_schedule WHERE due_at <= $1
ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED`

// claimed is a due row, locked by this round.
type claimed struct {
	bus.Job
	version  int
	lastType string
	causedBy *uuid.UUID
	order    string
	trace    string
}

// queueRound claims due rows, publishes their jobs, waits for JetStream's
// acknowledgements, then appends MessageQueued and clears the rows' due
// time, all in one transaction. The rows stay locked (not leased by an
// update: that doubled the table's churn) while the jobs are published; a
// round that dies before committing leaves them due, and the next one
// publishes again, deduplicated by the stream.
func (s *Scheduler) queueRound(ctx context.Context) (int, error) {
	n := 0
	err := s.cfg.Store.InTx(ctx, func(tx *eventstore.Tx) error {
		rows, err := tx.Query(ctx, claimDueSQL, s.cfg.Now(), s.cfg.BatchSize)
		if err != nil {
			return fmt.Errorf("claim due rows: %w", err)
		}
		var due []claimed
		for rows.Next() {
			var c claimed
			if err := rows.Scan(&c.MessageID, &c.AccountID, &c.Attempt, &c.version, &c.lastType, &c.causedBy, &c.order, &c.trace); err != nil {
				rows.Close()
				return err
			}
			due = append(due, c)
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("claim due rows: %w", err)
		}
		n = len(due)
		s.due.Set(float64(n))
		if n == 0 {
			return nil
		}
		jobs := make([]bus.Job, n)
		for i, c := range due {
			jobs[i] = c.Job
		}
		seqs, err := s.publish(ctx, jobs)
		if err != nil {
			return err
		}
		// Record them from what the rows say (the version each became due
		// at); only if a message moved on meanwhile, read the streams.
		err = tx.Savepoint(ctx, func(tx *eventstore.Tx) error { return s.recordQueued(ctx, tx, due, seqs, false) })
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) || errors.Is(err, errNeedHistory) {
			err = s.recordQueued(ctx, tx, due, seqs, true)
		}
		if err != nil {
			return fmt.Errorf("record queued: %w", err)
		}
		return nil
	})
	return n, err
}

// markQueuedSQL clears the rows' due time and notes the job for the
// stranded-message check (stranded.go).
const markQueuedSQL = `UPDATE message_schedule s SET due_at = NULL, queued_at = $3, job_seq = u.seq
FROM unnest($1::text[], $2::bigint[]) AS u(message_id, seq) WHERE s.message_id = u.message_id`

var errNeedHistory = errors.New("a claimed row does not say where its message stands")

// recordQueued appends MessageQueued for each claimed row whose message is
// still waiting for that attempt, and clears the rows' due time. With
// fold, it reads every stream and asks the aggregate; without, it trusts
// the row's version and last event type (the append's expected version
// makes that safe) and reports errNeedHistory for rows that lack them.
func (s *Scheduler) recordQueued(ctx context.Context, tx *eventstore.Tx, due []claimed, seqs []uint64, fold bool) error {
	streams := make([]string, len(due))
	ids := make([]string, len(due))
	for i, c := range due {
		streams[i], ids[i] = domain.MessageStream(c.MessageID), c.MessageID
	}
	var loaded map[string][]eventstore.RecordedEvent
	if fold {
		var err error
		if loaded, err = eventstore.ReadStreams(ctx, tx, streams); err != nil {
			return err
		}
	}
	now := s.cfg.Now().UTC()
	var appends []eventstore.StreamAppend
	for i, c := range due {
		jobID := fmt.Sprintf("%s:%d", s.cfg.Names.DispatchStream(), seqs[i])
		var ev domain.MessageQueued
		var version int
		var md eventstore.Metadata
		if fold {
			recs := loaded[streams[i]]
			m, err := eventstore.LoadMessage(recs)
			if err != nil {
				return err
			}
			if ev, err = m.Queue(jobID, now); err != nil || ev.Attempt != c.Attempt {
				// Final, or already queued for this attempt (a previous round
				// recorded it, then failed before its commit was seen): nothing to record.
				continue
			}
			version, md = m.Version, eventstore.FollowUp(recs, "scheduler")
		} else {
			if c.version == 0 || c.causedBy == nil {
				return errNeedHistory
			}
			var err error
			if ev, err = domain.QueueAfter(c.lastType, c.Attempt, jobID, now); err != nil {
				return errNeedHistory
			}
			version = c.version
			md = eventstore.Metadata{AccountID: c.AccountID, CorrelationID: c.order, CausationID: c.causedBy.String(),
				Actor: "scheduler", TraceID: c.trace}
		}
		appends = append(appends, eventstore.StreamAppend{Stream: streams[i], Expected: eventstore.Exact(version),
			Events: []eventstore.EventData{eventstore.MustEvent(ev, md)}})
	}
	if len(appends) > 0 {
		if _, err := tx.Append(ctx, appends...); err != nil {
			return err
		}
	}
	jobSeqs := make([]int64, len(seqs))
	for i, q := range seqs {
		jobSeqs[i] = int64(q)
	}
	if _, err := tx.Exec(ctx, markQueuedSQL, ids, jobSeqs, now); err != nil {
		return err
	}
	s.queued.Add(float64(len(appends)))
	return nil
}

// publish sends the jobs and waits for every acknowledgement; it returns
// each job's stream sequence.
func (s *Scheduler) publish(ctx context.Context, jobs []bus.Job) ([]uint64, error) {
	futures := make([]jetstream.PubAckFuture, len(jobs))
	for i, j := range jobs {
		body, _ := json.Marshal(j)
		msg := &nats.Msg{Subject: s.cfg.Names.DispatchSubject(j.MessageID), Data: body, Header: nats.Header{}}
		msg.Header.Set(jetstream.MsgIDHeader, j.MsgID())
		f, err := s.cfg.JetStream.PublishMsgAsync(msg)
		if err != nil {
			return nil, fmt.Errorf("publish job: %w", err)
		}
		futures[i] = f
	}
	return awaitAcks(ctx, futures)
}

// awaitAcks waits for every acknowledgement and returns each job's stream
// sequence (for a deduplicated re-publish, the original job's).
func awaitAcks(ctx context.Context, futures []jetstream.PubAckFuture) ([]uint64, error) {
	seqs := make([]uint64, len(futures))
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			seqs[i] = ack.Sequence
		case err := <-f.Err():
			return nil, fmt.Errorf("publish job %s: %w", f.Msg().Header.Get(jetstream.MsgIDHeader), err)
		case <-timeout.C:
			return nil, errors.New("publish jobs: no acknowledgement within 10s")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return seqs, nil
}

// MaintainedTables are the tables the scheduler wants eventstore.Maintainn// to look after: its schedule gains and loses a row for every attempt.
var MaintainedTables = []eventstore.Table{{Name: "message_schedule", Every: 15 * time.Second}}
