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

	mu        sync.Mutex // guards the window
	valid     bool
	lo, hi    Cursor
	evs       []RecordedEvent // the window, in tail order
	lastStart time.Time       // when the newest completed fill began

	fill sync.Mutex // one fill at a time
}

// DefaultTailCache is how many of the tail's newest events a store keeps
// for its consumers (see WithTailCache): about 1 KB each in memory.
const DefaultTailCache = 32768

// tailFill is how many events one fill reads at most.
const tailFill = 4096

// WithTailCache sets how many of the tail's newest events the store keeps
// in memory for its tail consumers (0: none; every consumer reads the
// database itself).
func WithTailCache(n int) Option { return func(s *Store) { s.tailMax = n } }

// readTail is ReadAll for the store's own tail consumers: from the shared
// window when it can, from the database when it cannot.
func (s *Store) readTail(ctx context.Context, after Cursor, limit int, f Filter) ([]RecordedEvent, Cursor, error) {
	t := s.tail
	if t == nil || f.AccountID != "" {
		return ReadAll(ctx, s.pool, after, limit, f)
	}
	asked := time.Now()
	if out, next, ok := t.serve(after, limit, f, time.Time{}); ok {
		s.consumerMetrics.tailRead("window")
		return out, next, nil
	}
	t.fill.Lock()
	defer t.fill.Unlock()
	// A fill that began after this call did the read this call would do.
	if out, next, ok := t.serve(after, limit, f, asked); ok {
		s.consumerMetrics.tailRead("shared")
		return out, next, nil
	}
	t.mu.Lock()
	valid, lo, hi := t.valid, t.lo, t.hi
	t.mu.Unlock()
	if valid && after.Less(lo) {
		// Behind the window: read the database, leave the window as it is.
		s.consumerMetrics.tailRead("behind")
		return ReadAll(ctx, s.pool, after, limit, f)
	}
	from := hi
	if !valid || hi.Less(after) {
		// Nothing yet, or a cursor past the window (a partition another
		// process moved on): the window starts again at this cursor.
		from = after
	}
	started := time.Now()
	batch, next, err := ReadAll(ctx, s.pool, from, tailFill, Filter{})
	if err != nil {
		return nil, after, err
	}
	s.consumerMetrics.tailRead("fill")
	t.mu.Lock()
	if !t.valid || from != t.hi {
		t.evs, t.lo = t.evs[:0], from
	}
	t.evs = append(t.evs, batch...)
	t.valid, t.hi, t.lastStart = true, next, started
	if n := len(t.evs); n > t.max {
		// Keep the newest max events: the oldest move out, and lo with them.
		// Re-slicing, not copying: append moves the live part to a new
		// array once this one is full, so each event is copied about once.
		cut := n - t.max
		t.lo = t.evs[cut-1].Cursor()
		t.evs = t.evs[cut:]
	}
	t.mu.Unlock()
	out, next2, _ := t.serve(after, limit, f, time.Time{})
	if after == next {
		return nil, after, nil // nothing new: the caller waits
	}
	return out, next2, nil
}

// serve answers a read after cursor from the window when the window holds
// what a read of the database would return: cursor inside it and events
// after it, or — when fresh is set — any cursor inside it, if the newest
// fill began after fresh (nothing newer to find by reading now).
func (t *tailCache) serve(after Cursor, limit int, f Filter, fresh time.Time) ([]RecordedEvent, Cursor, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.valid || after.Less(t.lo) || t.hi.Less(after) {
		return nil, after, false
	}
	if after == t.hi && (fresh.IsZero() || !t.lastStart.After(fresh)) {
		return nil, after, false
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
			return out, e.Cursor(), true
		}
	}
	return out, t.hi, true
}
