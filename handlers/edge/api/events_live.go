package api

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/eventstore"
)

// liveTail is the process's one reader of the store's live tail for every
// open event stream. Streams used to poll the store each on its own, four
// times a second, so idle streams cost the database in proportion to their
// number; now the streams of every tenant share this reader, which fans
// each event out to the subscribers of its account, and an idle stream
// costs nothing but its connection.
//
// The reader runs only while someone subscribes: the first subscriber
// starts it at the store's head, the last one to leave stops it.
//
// Handover. Every event after l.cursor will be delivered to the attached
// subscribers, and none up to it: the cursor only moves, under l.mu,
// together with the delivery of the batch it closes. A subscriber that
// attaches therefore receives exactly the events after the cursor it was
// given (from); a stream resuming from an older position reads the store
// itself from there up to from, then takes the live events. Both follow
// the same gap-safe tail order, so nothing falls between the two and
// nothing comes twice.
type liveTail struct {
	store  *eventstore.Store
	keys   keyLookup // nil: streams end at their key's APIKeyRevoked only
	sweep  time.Duration
	log    *slog.Logger
	max    int // concurrent streams per account
	poll   time.Duration
	buffer int
	gauge  prometheus.Gauge
	cuts   prometheus.Counter

	mu       sync.Mutex
	cursor   eventstore.Cursor
	accounts map[string]map[*subscriber]struct{}
	count    int
	stop     context.CancelFunc // nil while no reader runs
	gen      int                // tells a stopped reader that it was replaced
	closed   bool               // the server is shutting down: no new streams
	readers  sync.WaitGroup     // the reader goroutines, for close to wait on
}

// subscriber is one open stream.
type subscriber struct {
	filter eventFilter
	keyID  string // the key that opened it
	// revoked says how the reader learnt that keyID was revoked
	// (events_revoke.go); it is set before ch is closed.
	revoked string
	// ch carries the live events; the reader closes it when it is full
	// (the client reads too slowly) and the stream then ends, to be
	// resumed with Last-Event-ID.
	ch       chan liveEvent
	attached bool
	from     eventstore.Cursor
}

// liveEvent is one event ready to send: its tail cursor and its SSE
// record, encoded once for every stream that gets it.
type liveEvent struct {
	cursor eventstore.Cursor
	frame  []byte
}

const (
	liveBatch = 500
	// liveBuffer is how many events a stream may fall behind the live
	// tail before it is cut off: two of the reader's batches, so a client
	// that keeps up is never cut by a burst, and a channel every idle
	// stream allocates (40 bytes an event) stays small.
	liveBuffer = 2 * liveBatch
)

func newLiveTail(store *eventstore.Store, keys keyLookup, log *slog.Logger, maxPerAccount int, reg prometheus.Registerer) *liveTail {
	l := &liveTail{store: store, keys: keys, sweep: revocationSweep, log: log, max: maxPerAccount, poll: streamPoll, buffer: liveBuffer,
		accounts: map[string]map[*subscriber]struct{}{},
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "afterok_event_streams_open",
			Help: "Server-Sent Events streams open in this process."}),
		cuts: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_event_streams_cut_total",
			Help: "Event streams ended because the client read more slowly than events arrived."}),
	}
	reg.MustRegister(l.gauge, l.cuts)
	return l
}

// limitError is what subscribe returns when the account already has its
// maximum of open streams.
func (l *liveTail) limitError() error {
	return &detailed{kind: errRateLimited, retryAfter: 10 * time.Second,
		detail: fmt.Sprintf("this account already has %d open event streams in this process, the most allowed; close one or retry later", l.max)}
}

// subscribe counts a new stream of f's account against the cap. It
// receives nothing until attach.
func (l *liveTail) subscribe(f eventFilter, keyID string) (*subscriber, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		// A request that raced the shutdown: it gets a stream that ends at
		// once, as a cut one does, and the client resumes elsewhere.
		sub := &subscriber{filter: f, keyID: keyID, ch: make(chan liveEvent)}
		close(sub.ch)
		return sub, nil
	}
	subs := l.accounts[f.account]
	if len(subs) >= l.max {
		return nil, l.limitError()
	}
	if subs == nil {
		subs = map[*subscriber]struct{}{}
		l.accounts[f.account] = subs
	}
	sub := &subscriber{filter: f, keyID: keyID, ch: make(chan liveEvent, l.buffer)}
	subs[sub] = struct{}{}
	l.count++
	l.gauge.Inc()
	return sub, nil
}

// attach starts delivering live events to sub and returns the cursor
// they follow. It starts the reader, at the store's head, if none runs.
func (l *liveTail) attach(ctx context.Context, sub *subscriber) (eventstore.Cursor, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stop == nil && !l.closed {
		// Under the lock: a concurrent attach must not start a second
		// reader, and this is one query per reader start, not per stream.
		head, err := l.store.Head(ctx)
		if err != nil {
			return eventstore.Cursor{}, err
		}
		runCtx, cancel := context.WithCancel(context.Background())
		l.stop, l.cursor = cancel, head
		l.gen++
		l.readers.Add(1)
		go l.run(runCtx, l.gen, head)
	}
	sub.attached, sub.from = true, l.cursor
	return sub.from, nil
}

// unsubscribe forgets sub (again is harmless) and stops the reader when
// it was the last.
func (l *liveTail) unsubscribe(sub *subscriber) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.removeLocked(sub)
}

func (l *liveTail) removeLocked(sub *subscriber) {
	subs := l.accounts[sub.filter.account]
	if _, ok := subs[sub]; !ok {
		return
	}
	delete(subs, sub)
	if len(subs) == 0 {
		delete(l.accounts, sub.filter.account)
	}
	l.count--
	l.gauge.Dec()
	if l.count == 0 && l.stop != nil {
		l.stop()
		l.stop = nil
	}
}

// close ends every open stream, as a cut does (the clients resume with
// their Last-Event-ID), refuses new ones, stops the reader and waits for
// it. http.Server.Shutdown waits for streaming requests, which never go
// idle by themselves, so the server calls close when its shutdown begins.
func (l *liveTail) close() {
	l.mu.Lock()
	l.closed = true
	for _, subs := range l.accounts {
		for sub := range subs {
			close(sub.ch)
			l.removeLocked(sub)
		}
	}
	l.mu.Unlock()
	l.readers.Wait()
}

// run follows the tail from cursor until ctx ends or a newer reader
// replaced it.
func (l *liveTail) run(ctx context.Context, gen int, cursor eventstore.Cursor) {
	defer l.readers.Done()
	backoff := time.Duration(0)
	poll := time.NewTimer(l.poll)
	defer poll.Stop()
	sweep := time.NewTicker(l.sweep)
	defer sweep.Stop()
	for ctx.Err() == nil {
		select {
		case <-sweep.C: // due while the tail kept the reader busy
			l.sweepRevoked(ctx, gen)
		default:
		}
		changed := l.store.Changed() // taken before reading: no wake-up is lost
		batch, next, caughtUp, err := l.store.ReadTail(ctx, cursor, liveBatch, eventstore.Filter{})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			l.log.Error("event streams: reading the tail failed, retrying", "err", err, "backoff", backoff)
			eventstore.Sleep(ctx, backoff)
			continue
		}
		backoff = 0
		if !l.deliver(gen, batch, next) {
			return
		}
		cursor = next
		if !caughtUp {
			continue
		}
		poll.Reset(l.poll)
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-poll.C:
		case <-sweep.C:
			l.sweepRevoked(ctx, gen)
		}
	}
}

// deliver hands a batch to the attached subscribers and moves the cursor
// past it, in one step under the lock (see the handover above). It
// reports false when this reader has been replaced.
func (l *liveTail) deliver(gen int, batch []eventstore.RecordedEvent, next eventstore.Cursor) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen || l.stop == nil {
		return false
	}
	for i := range batch {
		e := &batch[i]
		subs := l.accounts[e.AccountID]
		if len(subs) == 0 {
			continue
		}
		var frame []byte
		for sub := range subs {
			if revokes(e, sub.keyID) {
				// Whatever its filter: nothing after its key's
				// revocation may reach the stream.
				l.revokeLocked(sub, "tail")
				continue
			}
			if !sub.attached || !sub.filter.matches(e) {
				continue
			}
			if frame == nil {
				frame = sseFrame(e)
			}
			select {
			case sub.ch <- liveEvent{cursor: e.Cursor(), frame: frame}:
			default:
				// Full: the client reads more slowly than its events
				// arrive. Holding more for it would grow without bound.
				close(sub.ch)
				l.cuts.Inc()
				l.removeLocked(sub)
			}
		}
	}
	l.cursor = next
	return true
}

func (f eventFilter) matches(e *eventstore.RecordedEvent) bool {
	return (len(f.types) == 0 || slices.Contains(f.types, e.Type)) && f.keep(e)
}

// sseFrame is one event as a Server-Sent Events record.
func sseFrame(e *eventstore.RecordedEvent) []byte {
	data, _ := json.Marshal(eventViewOfRecorded(e))
	return fmt.Appendf(nil, "id: %d\nevent: %s\ndata: %s\n\n", e.Position, e.Type, data)
}
