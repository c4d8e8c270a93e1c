package projections

import (
	"context"
	"fmt"
	"sort"

	"github.com/afterok/afterok/eventstore"
)

// Per-stream order.
//
// The gap-safe tail is ordered by (transaction id, position), and a
// transaction's id is assigned at its first write, not when it locks a
// stream. A transaction that wrote something else first and then appends
// version 5 of a stream whose version 4 was committed meanwhile by a
// younger transaction stores version 5 under the smaller id: the tail
// delivers 5 before 4. (TestTailDeliversAStreamOutOfVersionOrder shows it.)
//
// Folding needs version order, so inVersionOrder hands each stream's
// events over contiguously from the version the read model holds. When the
// batch skips a version, the missing events are read from the store: they
// are committed (an append locks the stream, so version 4 committed before
// version 5 was written), just later in the tail. When the tail then brings
// them, they are at or below the row's version and are dropped as already
// folded.

type streamEvents struct {
	stream string
	events []eventstore.RecordedEvent
}

// inVersionOrder groups batch by stream and returns, for each stream in
// order of first appearance, the events after version have(stream), in
// version order and without gaps, reading missing ones through q.
func inVersionOrder(ctx context.Context, q eventstore.Querier, batch []eventstore.RecordedEvent,
	have func(stream string) int) ([]streamEvents, error) {
	idx := map[string]int{}
	var out []streamEvents
	for _, e := range batch {
		i, ok := idx[e.StreamID]
		if !ok {
			i = len(out)
			idx[e.StreamID] = i
			out = append(out, streamEvents{stream: e.StreamID})
		}
		out[i].events = append(out[i].events, e)
	}
	for i := range out {
		s := &out[i]
		from := have(s.stream)
		sort.Slice(s.events, func(a, b int) bool { return s.events[a].Version < s.events[b].Version })
		kept := s.events[:0]
		for _, e := range s.events {
			if e.Version > from && (len(kept) == 0 || e.Version > kept[len(kept)-1].Version) {
				kept = append(kept, e)
			}
		}
		s.events = kept
		if len(kept) == 0 || kept[len(kept)-1].Version-from == len(kept) {
			continue // contiguous from the row's version
		}
		last := kept[len(kept)-1].Version
		stored, err := eventstore.ReadStream(ctx, q, s.stream, from+1)
		if err != nil {
			return nil, err
		}
		s.events = s.events[:0]
		for _, e := range stored {
			if e.Version <= last {
				s.events = append(s.events, e)
			}
		}
		if len(s.events) != last-from {
			return nil, fmt.Errorf("stream %s: versions %d to %d are not all in the store", s.stream, from+1, last)
		}
	}
	return out, nil
}
