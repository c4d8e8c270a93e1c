package eventstore

import (
	"context"
	"slices"
	"sync"
	"time"
)

// The shared tail.
//
// A process runs several tail consumers (the relay, the scheduler, the
// tracker, the projectors, the callbacks fan-out, the live event stream),
// and each of them used to read the tail itself: the same rows read, sent
// and decoded six or seven times, and the largest share of PostgreSQL's
// statement time. The store keeps instead one window of the tail in
// memory, filled by one unfiltered gap-safe read at a time, and serves
// every consumer of the process whose cursor lies inside it.
//
// Why it is as safe as reading the database: the window is what gap-safe
// reads returned, and each read starts exactly where the window ends, so
// the window holds every event whose cursor lies in (lo, hi] and no event
// can ever commit there later (hi is never beyond a read's horizon). A
// consumer at cursor c in [lo, hi) gets the events of (c, hi] that match
// its filter (up to its limit): the same a read of the database could
// return, cut at an earlier horizon. A consumer at hi asks for a fill; a
// consumer before lo (far behind, or one that has just taken over an old
// partition) or with a tenant filter reads the database itself, as before.
//
// Freshness: a fill that started after a consumer asked has seen every
// commit the consumer could have seen with its own read, so consumers
// woken by the same commit share one fill rather than reading one after
// another.
type tailCache struct {
	s   *Store
	max int // events kept; the oldest go first

	mu     sync.Mutex // guards the window
	valid  bool
	lo, hi Cursor
	evs    []RecordedEvent // the window, in tail order
	// caughtUp is when the newest fill that reached its horizon (a short
	// page) began: every commit before it is in the window.
	caughtUp time.Time

	fill chan struct{} // one fill at a time (a semaphore a context can leave)
}

// DefaultTailCache is how many of the tail's newest events a store keeps
// for its consumers (see WithTailCache): about 1 KB each in memory.
const DefaultTailCache = 8192

// tailFill is how many events one fill reads at most.
const tailFill = 4096

// WithTailCache sets how many of the tail's newest events the store keeps
// in memory for its tail consumers (0: none; every consumer reads the
// database itself). Less than one fill (4,096) counts as one fill.
func WithTailCache(n int) Option { return func(s *Store) { s.tailMax = n } }

func newTailCache(s *Store, n int) *tailCache {
	return &tailCache{s: s, max: max(n, tailFill), fill: make(chan struct{}, 1)}
}

// ReadTail is ReadAll for the store's tail followers, from the shared
// window when it can (the events returned are shared: do not change them).
// caughtUp reports that the page holds every event committed before the
// call: a follower that waits for the next commit should wait only then.
// (A page from the window can be short and still not hold a commit that
// landed after the window's last fill; the follower's next read finds it.)
func (s *Store) ReadTail(ctx context.Context, after Cursor, limit int, f Filter) (batch []RecordedEvent, next Cursor, caughtUp bool, err error) {
	t := s.tail
	direct := func(source string) ([]RecordedEvent, Cursor, bool, error) {
		if source != "" {
			s.consumerMetrics.tailRead(source)
		}
		b, n, err := ReadAll(ctx, s.pool, after, limit, f)
		return b, n, err == nil && len(b) < limit, err
	}
	if t == nil || f.AccountID != "" || limit <= 0 {
		return direct("")
	}
	asked := time.Now()
	out, next, caught, st := t.serve(after, limit, f, asked)
	switch {
	case st == answered:
		s.consumerMetrics.tailRead("window")
		return out, next, caught, nil
	case st == behind:
		return direct("behind")
	case f.Sparse:
		// At the window's end, a consumer of a few types reads them
		// through their index rather than fill the window with every type.
		return direct("sparse")
	}
	select {
	case t.fill <- struct{}{}:
	case <-ctx.Done():
		return nil, after, false, ctx.Err()
	}
	defer func() { <-t.fill }()
	// A fill that began after this call did the read this call would do.
	if out, next, caught, st = t.serve(after, limit, f, asked); st == answered {
		s.consumerMetrics.tailRead("shared")
		return out, next, caught, nil
	}
	if err := t.fillTo(ctx, after); err != nil {
		return nil, after, false, err
	}
	if out, next, caught, st = t.serve(after, limit, f, asked); st == answered {
		return out, next, caught, nil
	}
	return direct("behind") // the window moved on past this cursor meanwhile
}

// fillTo extends the window from its end until it covers cursor after or
// reaches the horizon; a window that is empty, or more than two fills
// short of after, starts again at after. The caller holds t.fill.
func (t *tailCache) fillTo(ctx context.Context, after Cursor) error {
	t.mu.Lock()
	from := t.hi
	if !t.valid {
		from = after
	}
	t.mu.Unlock()
	for round := 0; ; round++ {
		if round == 2 {
			from = after
		}
		started := time.Now()
		batch, next, err := ReadAll(ctx, t.s.pool, from, tailFill, Filter{})
		if err != nil {
			return err
		}
		t.s.consumerMetrics.tailRead("fill")
		short := len(batch) < tailFill
		t.extend(from, batch, next, started, short)
		if short || !next.Less(after) {
			return nil
		}
		from = next
	}
}

// extend adds a fill's page, read from cursor from, to the window.
func (t *tailCache) extend(from Cursor, batch []RecordedEvent, next Cursor, started time.Time, short bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid || from != t.hi {
		t.evs, t.lo = t.evs[:0], from // a new window
	}
	t.evs = append(t.evs, batch...)
	t.valid, t.hi = true, next
	if short {
		t.caughtUp = started
	}
	if n := len(t.evs); n > t.max {
		// Keep the newest max events: the oldest move out, and lo with them.
		// Re-slicing, not copying: append moves the live part to a new
		// array once this one is full.
		cut := n - t.max
		t.lo = t.evs[cut-1].Cursor()
		t.evs = t.evs[cut:]
	}
}

// answer says how serve answered.
type answer int

const (
	answered answer = iota // from the window
	atEnd                  // at or past the window's end: a fill is needed
	behind                 // before the window: read the database
)

// serve answers a read after cursor from the window when the window holds
// what a read of the database would return: events after the cursor, or
// nothing after it if a fill that reached its horizon began after asked.
func (t *tailCache) serve(after Cursor, limit int, f Filter, asked time.Time) ([]RecordedEvent, Cursor, bool, answer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case !t.valid || t.hi.Less(after):
		return nil, after, false, atEnd
	case after.Less(t.lo):
		return nil, after, false, behind
	}
	fresh := t.caughtUp.After(asked)
	if after == t.hi {
		if fresh {
			return nil, after, true, answered
		}
		return nil, after, false, atEnd
	}
	i, _ := slices.BinarySearchFunc(t.evs, after, func(e RecordedEvent, c Cursor) int {
		switch ec := e.Cursor(); {
		case ec.Less(c):
			return -1
		case ec == c:
			return 0
		default:
			return 1
		}
	})
	if i < len(t.evs) && t.evs[i].Cursor() == after {
		i++
	}
	var keep map[string]bool
	if len(f.Types) > 0 {
		keep = make(map[string]bool, len(f.Types))
		for _, typ := range f.Types {
			keep[typ] = true
		}
	}
	var out []RecordedEvent
	for ; i < len(t.evs); i++ {
		e := t.evs[i]
		if keep != nil && !keep[e.Type] {
			continue
		}
		if out = append(out, e); len(out) == limit {
			return out, e.Cursor(), false, answered
		}
	}
	return out, t.hi, fresh, answered
}
