package eventstore

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/eventstore/bus"
)

// The relay is the only way events reach JetStream (a handler that
// published after its commit would lose events on a crash between the two).
// Its contract:
//
//   - Every event is published, in the store's tail order, on
//     Names.EventSubject(account, aggregate, type) with Nats-Msg-Id = event
//     id, so that a re-publish within the stream's duplicate window is
//     dropped by the server.
//   - The checkpoint only ever moves past events whose PubAck arrived, and
//     only in tail order: an event acknowledged after one that failed does
//     not count until the failed one is re-published and acknowledged.
//   - Any publish failure (error, missing ack, disconnect) abandons the
//     in-flight window and publishes again from the last acknowledged
//     event. The stream stays in tail order through that because every
//     message but the first one after a (re)start carries
//     Nats-Expected-Last-Msg-Id = the previous event's id: a message whose
//     predecessor never landed (lost on a dead socket while a later one was
//     flushed from the reconnect buffer, refused, or retried by the client
//     after it) is refused instead of being stored out of order. The first
//     one needs no such guard: everything before it was acknowledged. The
//     server checks Nats-Msg-Id before the expectation, so re-published
//     duplicates are acknowledged as duplicates whatever they expect.
//   - Not on a replicated events stream (RelayConfig.Replicas > 1): there
//     nats-server (2.15.3 at least) checks the expectation only when each
//     replica applies the entry, and a mismatch at that point is a
//     "critical write error" that stops the stream on every replica that
//     applies it, so the stream is left with no leader until its servers
//     restart. A leader change with publishes in flight makes exactly such
//     a mismatch (seen in TestClusterSurvivesAStoppedNATSNode, three runs
//     in four). On a cluster the relay therefore sends no expectation:
//     every event is still stored once (the leader checks Nats-Msg-Id
//     before it replicates), but after a publish failure a later event can
//     land ahead of an earlier one; docs/events.md says so.
//   - The duplicate window (bus.StreamConfig.Duplicates, 2 min) bounds the
//     deduplication: a relay that crashed after publishing and restarts
//     later than that stores those events a second time. Subscribers
//     deduplicate by event id (docs/events.md).
//   - Errors are logged and retried with a backoff; Run returns only when
//     its context ends.

// RelayConfig configures a Relay. Store, JetStream and Names are required;
// every other field has a default.
type RelayConfig struct {
	Store     *Store
	JetStream jetstream.JetStream
	Names     bus.Names
	// Replicas is how many servers hold the events stream
	// (bus.StreamConfig.Replicas, default 1). Above 1 the relay publishes
	// without its ordering guard (see the contract above).
	Replicas int
	// CheckpointName is the checkpoints row the relay advances (default
	// "relay"). Run one relay per name: a second one is safe (the
	// checkpoint is compare-and-set, re-publishes are deduplicated) but
	// only doubles the work.
	CheckpointName string
	// BatchSize is the number of events read from the tail per query
	// (default 500).
	BatchSize int
	// MaxInFlight bounds the events published and not yet acknowledged
	// (default 1024). Keep it at or below the JetStream context's
	// PublishAsyncMaxPending (4000 unless set), which every async publisher
	// on that context shares.
	MaxInFlight int
	// Poll is how long the relay waits for appends made by other processes
	// when it has caught up (default 100 ms); appends through Store wake it
	// at once.
	Poll time.Duration
	// AckTimeout is how long a PubAck may take before the relay gives up on
	// the in-flight window and publishes again from the last acknowledged
	// event (default 5 s). It also bounds how long shutdown waits for the
	// acks of what was already sent. The client keeps an abandoned future
	// until the server answers or the context's
	// jetstream.WithPublishAsyncTimeout fails it (bus.Connect sets one):
	// without that, futures the server never answers (a lost leader in a
	// cluster) fill PublishAsyncMaxPending for good.
	AckTimeout time.Duration
	// CheckpointInterval is how often the position of the acknowledged
	// events is written (default 200 ms): checkpoint rows are written per
	// interval, not per event. A crash re-publishes at most what was
	// acknowledged within one interval, and the server drops those as
	// duplicates.
	CheckpointInterval time.Duration
	// LagInterval is how often Lag is measured (default 1 s).
	LagInterval time.Duration
	Logger      *slog.Logger
	// Registerer receives the relay's metrics; nil registers them nowhere.
	// Two relays need two registerers (or prometheus.WrapRegistererWith).
	Registerer prometheus.Registerer

	// beforeCheckpoint, when set, runs before every checkpoint write; an
	// error from it makes Run return at once without writing anything more,
	// like a process that dies between the acks and the checkpoint (fault
	// tests set it).
	beforeCheckpoint func(to Cursor) error
}

func (c RelayConfig) withDefaults() RelayConfig {
	c.CheckpointName = cmp.Or(c.CheckpointName, "relay")
	c.BatchSize = cmp.Or(c.BatchSize, 500)
	c.MaxInFlight = cmp.Or(c.MaxInFlight, 1024)
	c.Poll = cmp.Or(c.Poll, 100*time.Millisecond)
	c.AckTimeout = cmp.Or(c.AckTimeout, 5*time.Second)
	c.CheckpointInterval = cmp.Or(c.CheckpointInterval, 200*time.Millisecond)
	c.LagInterval = cmp.Or(c.LagInterval, time.Second)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Relay publishes every stored event to JetStream. Create it with NewRelay
// and run it with Run.
type Relay struct {
	cfg     RelayConfig
	log     *slog.Logger
	metrics *relayMetrics
	running atomic.Bool

	mu      sync.Mutex
	acked   Cursor // the last event, in tail order, whose PubAck arrived
	saved   Cursor // the checkpoint as last written or read
	lag     Lag
	crashed error // set by beforeCheckpoint
}

// NewRelay checks cfg and registers the relay's metrics.
func NewRelay(cfg RelayConfig) (*Relay, error) {
	if cfg.Store == nil || cfg.JetStream == nil || cfg.Names.Prefix == "" {
		return nil, errors.New("relay: Store, JetStream and Names are required")
	}
	if cfg.BatchSize < 0 || cfg.MaxInFlight < 0 || cfg.Poll < 0 || cfg.AckTimeout < 0 || cfg.CheckpointInterval < 0 || cfg.LagInterval < 0 {
		return nil, errors.New("relay: sizes and intervals must not be negative")
	}
	cfg = cfg.withDefaults()
	m, err := newRelayMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("relay metrics: %w", err)
	}
	return &Relay{cfg: cfg, log: cfg.Logger.With("relay", cfg.CheckpointName), metrics: m}, nil
}

// Run relays events from the checkpoint until ctx ends. Failures of
// PostgreSQL or NATS are logged and retried; Run returns ctx's error. On
// the way out it stops reading, waits (up to AckTimeout) for the acks of
// what it already published and writes the checkpoint once more.
func (r *Relay) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("relay: already running")
	}
	defer r.running.Store(false)
	start, err := r.loadCheckpoint(ctx)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.acked, r.saved = start, start
	r.mu.Unlock()
	r.log.Info("relay started", "cursor", start.String())

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { r.checkpointLoop(runCtx, stop) })
	wg.Go(func() { r.lagLoop(runCtx) })

	backoff := time.Duration(0)
	for runCtx.Err() == nil {
		from := r.ackedCursor()
		err := r.relayFrom(runCtx, from)
		if runCtx.Err() != nil {
			break
		}
		if r.ackedCursor() != from {
			backoff = 0 // it made progress: this is a new failure, not the same one again
		}
		backoff = nextBackoff(backoff)
		r.log.Warn("relay: publishing interrupted, resuming from the last acknowledged event",
			"err", err, "reason", publishErrorReason(err), "cursor", r.ackedCursor().String(), "backoff", backoff)
		Sleep(runCtx, backoff)
	}
	stop()
	wg.Wait()
	if err := r.crashErr(); err != nil {
		return err
	}
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.saveCheckpoint(flushCtx); err != nil {
		var crash *crashError
		if errors.As(err, &crash) {
			return crash.err
		}
		r.log.Warn("relay: final checkpoint not written; the next start re-publishes from the previous one", "err", err)
	}
	r.log.Info("relay stopped", "cursor", r.ackedCursor().String())
	return ctx.Err()
}

func (r *Relay) loadCheckpoint(ctx context.Context) (Cursor, error) {
	backoff := time.Duration(0)
	for {
		c, err := Checkpoint(ctx, r.cfg.Store.pool, r.cfg.CheckpointName)
		if err == nil {
			return c, nil
		}
		if ctx.Err() != nil {
			return Cursor{}, ctx.Err()
		}
		backoff = nextBackoff(backoff)
		r.metrics.storeErrors.WithLabelValues("checkpoint").Inc()
		r.log.Warn("relay: reading the checkpoint failed, retrying", "err", err, "backoff", backoff)
		Sleep(ctx, backoff)
	}
}

// inflight is one published event waiting for its PubAck.
type inflight struct {
	paf      jetstream.PubAckFuture
	sent     time.Time
	cursor   Cursor
	streamID string
	eventID  string
}

var (
	errNotConnected = errors.New("nats connection is not connected")
	errAckTimeout   = errors.New("no PubAck within the ack timeout")
)

// relayFrom publishes the tail after from until a publish fails or ctx
// ends, in three stages: read batches ahead (a goroutine), publish them
// asynchronously with at most MaxInFlight unacknowledged (a goroutine), and
// collect the acks in publish order, advancing the acknowledged cursor (the
// calling goroutine). The checkpoint loop writes that cursor.
func (r *Relay) relayFrom(ctx context.Context, from Cursor) error {
	if nc := r.cfg.JetStream.Conn(); nc != nil && nc.Status() != nats.CONNECTED {
		// Publishing now would only fill the client's reconnect buffer with
		// messages that will fail anyway.
		r.metrics.publishErrors.WithLabelValues(reasonDisconnected).Inc()
		return errNotConnected
	}
	seg, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// failed is closed on the first failure. The ack collector watches it
	// instead of seg: when ctx ends without a failure it keeps collecting
	// the acks of what was sent, so that shutdown loses as little as it can.
	failed := make(chan struct{})
	var once sync.Once
	fail := func(err error) {
		once.Do(func() {
			cancel(err)
			close(failed)
		})
	}

	batches := make(chan []RecordedEvent, 1)
	slots := make(chan struct{}, r.cfg.MaxInFlight)
	pending := make(chan inflight, r.cfg.MaxInFlight)
	var wg sync.WaitGroup
	wg.Go(func() { r.read(seg, from, batches) })
	wg.Go(func() {
		if err := r.publish(seg, batches, slots, pending); err != nil {
			fail(err)
		}
	})
	if err := r.collectAcks(pending, slots, failed); err != nil {
		fail(err)
	}
	fail(nil) // stop the reader when the publisher stopped on ctx
	wg.Wait()
	if err := context.Cause(seg); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// read follows the tail from cursor and hands out batches. A failed read
// (PostgreSQL restarting, a killed connection) is retried from the same
// cursor: it loses nothing, so it need not disturb what is in flight.
func (r *Relay) read(ctx context.Context, cursor Cursor, out chan<- []RecordedEvent) {
	defer close(out)
	backoff := time.Duration(0)
	for ctx.Err() == nil {
		// Taken before the read: an append committed after it closes it.
		changed := r.cfg.Store.Changed()
		batch, next, caughtUp, err := r.cfg.Store.ReadTail(ctx, cursor, r.cfg.BatchSize, Filter{})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = nextBackoff(backoff)
			r.metrics.storeErrors.WithLabelValues("read").Inc()
			r.log.Warn("relay: reading the tail failed, retrying", "err", err, "cursor", cursor.String(), "backoff", backoff)
			Sleep(ctx, backoff)
			continue
		}
		backoff = 0
		if len(batch) > 0 {
			select {
			case out <- batch:
			case <-ctx.Done():
				return
			}
		}
		cursor = next
		if caughtUp {
			t := time.NewTimer(r.cfg.Poll)
			select {
			case <-ctx.Done():
			case <-changed:
			case <-t.C:
			}
			t.Stop()
		}
	}
}

// publish sends every event of every batch without waiting for its ack,
// holding one of the MaxInFlight slots per event until collectAcks
// releases it.
func (r *Relay) publish(ctx context.Context, batches <-chan []RecordedEvent, slots chan<- struct{}, pending chan<- inflight) error {
	defer close(pending)
	prev := "" // the event id the stream's last message has when this one is stored in order
	for {
		var batch []RecordedEvent
		select {
		case <-ctx.Done():
			return nil
		case b, ok := <-batches:
			if !ok {
				return nil
			}
			batch = b
		}
		for i := range batch {
			e := &batch[i]
			select {
			case slots <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			id := e.ID.String()
			msg, err := r.message(e, id, prev)
			if err != nil {
				return fmt.Errorf("encode %s v%d: %w", e.StreamID, e.Version, err)
			}
			paf, err := r.cfg.JetStream.PublishMsgAsync(msg)
			if err != nil {
				r.metrics.publishErrors.WithLabelValues(publishErrorReason(err)).Inc()
				return fmt.Errorf("publish %s v%d (event %s, position %d): %w", e.StreamID, e.Version, e.ID, e.Position, err)
			}
			pending <- inflight{paf: paf, sent: time.Now(), cursor: e.Cursor(), streamID: e.StreamID, eventID: id}
			prev = id
		}
	}
}

// collectAcks waits for the acks in publish order, so the acknowledged
// cursor never passes an event whose ack has not arrived. It returns when
// the publisher has stopped and everything it sent is resolved, or at the
// first failure.
func (r *Relay) collectAcks(pending <-chan inflight, slots <-chan struct{}, failed <-chan struct{}) error {
	timer := time.NewTimer(r.cfg.AckTimeout)
	defer timer.Stop()
	for f := range pending {
		timer.Reset(time.Until(f.sent.Add(r.cfg.AckTimeout)))
		var err error
		select {
		case ack := <-f.paf.Ok():
			r.acknowledged(f, ack.Duplicate)
		case err = <-f.paf.Err():
		case <-timer.C:
			err = errAckTimeout
		case <-failed:
			return nil
		}
		<-slots
		if err != nil {
			r.metrics.publishErrors.WithLabelValues(publishErrorReason(err)).Inc()
			return fmt.Errorf("publish %s (event %s, position %d): %w", f.streamID, f.eventID, f.cursor.Position, err)
		}
	}
	return nil
}

func (r *Relay) acknowledged(f inflight, duplicate bool) {
	r.mu.Lock()
	r.acked = f.cursor
	r.mu.Unlock()
	if duplicate {
		r.metrics.duplicates.Inc()
	} else {
		r.metrics.published.Inc()
	}
}

func (r *Relay) ackedCursor() Cursor {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.acked
}

func (r *Relay) crashErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.crashed
}

// checkpointLoop writes the acknowledged cursor every CheckpointInterval.
// A failed write is retried at the next tick; it holds nothing up. During
// an outage it logs the first failure and every 50th, not one per tick.
func (r *Relay) checkpointLoop(ctx context.Context, stop context.CancelFunc) {
	t := time.NewTicker(r.cfg.CheckpointInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := r.saveCheckpoint(ctx)
		var crash *crashError
		switch {
		case errors.As(err, &crash):
			r.mu.Lock()
			r.crashed = crash.err
			r.mu.Unlock()
			stop()
			return
		case ctx.Err() != nil:
		case err == nil:
			if failures > 0 {
				r.log.Info("relay: checkpoint written again", "failures", failures)
			}
			failures = 0
		case errors.Is(err, ErrCheckpointMoved):
			r.log.Warn("relay: another relay moved the checkpoint", "checkpoint", r.cfg.CheckpointName)
		default:
			r.metrics.storeErrors.WithLabelValues("checkpoint").Inc()
			if failures++; failures%50 == 1 {
				r.log.Warn("relay: writing the checkpoint failed, retrying", "err", err, "failures", failures)
			}
		}
	}
}

type crashError struct{ err error }

func (e *crashError) Error() string { return "relay crashed before checkpoint: " + e.err.Error() }

// saveCheckpoint moves the checkpoint to the acknowledged cursor. It never
// moves it backwards: when another instance moved it further, this one
// adopts that value and writes again once it has acknowledged past it.
func (r *Relay) saveCheckpoint(ctx context.Context) error {
	r.mu.Lock()
	from, to := r.saved, r.acked
	r.mu.Unlock()
	if !from.Less(to) {
		return nil
	}
	if r.cfg.beforeCheckpoint != nil {
		if err := r.cfg.beforeCheckpoint(to); err != nil {
			return &crashError{err}
		}
	}
	err := r.cfg.Store.InTx(ctx, func(tx *Tx) error { return SaveCheckpoint(ctx, tx, r.cfg.CheckpointName, from, to) })
	if errors.Is(err, ErrCheckpointMoved) {
		if cur, rerr := Checkpoint(ctx, r.cfg.Store.pool, r.cfg.CheckpointName); rerr == nil {
			r.mu.Lock()
			r.saved = cur
			r.mu.Unlock()
		}
		return err
	}
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.saved = to
	r.mu.Unlock()
	return nil
}

func nextBackoff(b time.Duration) time.Duration {
	return min(max(2*b, 50*time.Millisecond), 2*time.Second)
}
