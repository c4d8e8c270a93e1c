package eventstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// sharedTailRig runs consumers of one process (one Store) and records
// what each of them applied, in commit order.
type sharedTailRig struct {
	t   *testing.T
	ctx context.Context
	s   *eventstore.Store
	db  *storetest.DB
	reg *prometheus.Registry

	mu   sync.Mutex
	seen map[string][]eventstore.RecordedEvent
}

func newSharedTailRig(t *testing.T, opts ...eventstore.Option) *sharedTailRig {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	reg := prometheus.NewRegistry()
	s, db := newStore(t, append(opts, eventstore.WithConsumerMetrics(eventstore.NewConsumerMetrics(reg)))...)
	return &sharedTailRig{t: t, ctx: ctx, s: s, db: db, reg: reg, seen: map[string][]eventstore.RecordedEvent{}}
}

// run starts a consumer named name that records each committed batch.
func (g *sharedTailRig) run(name string, batch int, f eventstore.Filter) {
	ctx, cancel := context.WithCancel(g.ctx)
	done := make(chan struct{})
	g.t.Cleanup(func() { cancel(); <-done })
	// A long poll and lease: a consumer that missed a wake-up would wait a
	// minute and fail the test rather than catch up on its next poll.
	c := eventstore.Consumer{Name: name, BatchSize: batch, Filter: f, Poll: time.Minute, Lease: 3 * time.Minute, Partitions: 3,
		Handle: func(context.Context, *eventstore.Tx, []eventstore.RecordedEvent) error { return nil },
		Committed: func(b []eventstore.RecordedEvent) {
			g.mu.Lock()
			defer g.mu.Unlock()
			g.seen[name] = append(g.seen[name], b...)
		}}
	go func() { defer close(done); _ = g.s.Run(ctx, c) }()
}

// all reads every stored event from the database, in tail order.
func (g *sharedTailRig) all() []eventstore.RecordedEvent {
	var out []eventstore.RecordedEvent
	for c := (eventstore.Cursor{}); ; {
		b, next, err := eventstore.ReadAll(g.ctx, g.db.Pool, c, 1000, eventstore.Filter{})
		require.NoError(g.t, err)
		if len(b) == 0 {
			return out
		}
		out, c = append(out, b...), next
	}
}

// requireExactly waits until consumer name has applied as many events as
// want holds, then checks it applied exactly those, each once, and each
// stream's in version order.
func (g *sharedTailRig) requireExactly(name string, want []eventstore.RecordedEvent) {
	storetest.Poll(g.t, 60*time.Second, func() (bool, string) {
		g.mu.Lock()
		defer g.mu.Unlock()
		return len(g.seen[name]) >= len(want), fmt.Sprintf("%s: %d of %d events", name, len(g.seen[name]), len(want))
	})
	time.Sleep(100 * time.Millisecond) // anything applied twice shows up too
	g.mu.Lock()
	got := slices.Clone(g.seen[name])
	g.mu.Unlock()
	ids := func(evs []eventstore.RecordedEvent) []string {
		out := make([]string, len(evs))
		for i, e := range evs {
			out[i] = e.ID.String()
		}
		slices.Sort(out)
		return out
	}
	require.Equal(g.t, ids(want), ids(got), "%s applied other events than the store holds, or one twice", name)
	last := map[string]int{}
	for _, e := range got {
		require.Greater(g.t, e.Version, last[e.StreamID], "%s applied %s out of version order", name, e.StreamID)
		last[e.StreamID] = e.Version
	}
}

func (g *sharedTailRig) reads(source string) float64 {
	m, err := g.reg.Gather()
	require.NoError(g.t, err)
	for _, f := range m {
		if f.GetName() != "afterok_tail_reads_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			if s.GetLabel()[0].GetValue() == source {
				return s.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func only(evs []eventstore.RecordedEvent, types ...string) []eventstore.RecordedEvent {
	var out []eventstore.RecordedEvent
	for _, e := range evs {
		if slices.Contains(types, e.Type) {
			out = append(out, e)
		}
	}
	return out
}

// TestConsumersOfAProcessShareTheTail runs five consumers of one process
// with different filters and batch sizes while appenders write, some of
// them holding their transactions open (the case that breaks a tail that
// trusts positions): every consumer applies exactly the events its filter
// asks for, each once and in each stream's order, and the database is read
// far less often than the consumers read the tail.
func TestConsumersOfAProcessShareTheTail(t *testing.T) {
	g := newSharedTailRig(t)
	g.run("every", 500, eventstore.Filter{})
	g.run("small", 37, eventstore.Filter{})
	g.run("t1", 200, eventstore.Filter{Types: []string{"T1"}})
	g.run("t2-sparse", 50, eventstore.Filter{Types: []string{"T2"}, Sparse: true})
	g.run("t1-t3", 100, eventstore.Filter{Types: []string{"T1", "T3"}})

	var wg sync.WaitGroup
	for w := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 150 {
				typ := []string{"T1", "T2", "T3"}[rand.IntN(3)]
				stream := fmt.Sprintf("w%d-%d", w, i%7)
				err := g.s.InTx(g.ctx, func(tx *eventstore.Tx) error {
					if _, err := tx.Append(g.ctx, eventstore.StreamAppend{Stream: stream, Expected: eventstore.Any,
						Events: []eventstore.EventData{ev(typ, i), ev(typ, i)}}); err != nil {
						return err
					}
					if i%25 == 0 {
						time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond) // others commit past it
					}
					return nil
				})
				require.NoError(t, err)
			}
		}()
	}
	wg.Wait()

	all := g.all()
	require.Len(t, all, 6*150*2)
	g.requireExactly("every", all)
	g.requireExactly("small", all)
	g.requireExactly("t1", only(all, "T1"))
	g.requireExactly("t2-sparse", only(all, "T2"))
	g.requireExactly("t1-t3", only(all, "T1", "T3"))

	t.Logf("tail reads: %v fills of the database, %v answered from memory, %v behind the window",
		g.reads("fill"), g.reads("window")+g.reads("shared"), g.reads("behind"))
}

// TestCatchingUpConsumersReadTheDatabaseOnce starts five consumers on a
// backlog: one of them fills the window, the rest of their reads (82 for
// the one that reads 37 at a time) are answered from memory.
func TestCatchingUpConsumersReadTheDatabaseOnce(t *testing.T) {
	g := newSharedTailRig(t)
	require.NoError(t, g.s.InTx(g.ctx, func(tx *eventstore.Tx) error {
		for i := range 3000 {
			if _, err := tx.Append(g.ctx, eventstore.StreamAppend{Stream: fmt.Sprintf("s-%d", i%97), Expected: eventstore.Any,
				Events: []eventstore.EventData{ev([]string{"T1", "T2", "T3"}[i%3], i)}}); err != nil {
				return err
			}
		}
		return nil
	}))
	all := g.all()
	g.run("every", 500, eventstore.Filter{})
	g.run("small", 37, eventstore.Filter{})
	g.run("t1", 200, eventstore.Filter{Types: []string{"T1"}})
	g.run("t2-sparse", 50, eventstore.Filter{Types: []string{"T2"}, Sparse: true})
	g.run("t1-t3", 100, eventstore.Filter{Types: []string{"T1", "T3"}})
	g.requireExactly("every", all)
	g.requireExactly("small", all)
	g.requireExactly("t1", only(all, "T1"))
	g.requireExactly("t2-sparse", only(all, "T2"))
	g.requireExactly("t1-t3", only(all, "T1", "T3"))
	fills, served := g.reads("fill"), g.reads("window")+g.reads("shared")
	t.Logf("tail reads: %v fills of the database, %v answered from memory", fills, served)
	// Catching up takes 82 + 6 + 5 + 20 + 20 = 133 reads (events / batch
	// size, counting what each filter keeps). Without the window each is a
	// read of the database; with it one fill serves the four that read
	// every type or a broad filter (113 reads). The sparse one reads its
	// index whenever it is at the window's end, which depends on timing.
	require.GreaterOrEqual(t, served, 105.0, "the catching-up reads come from memory")
	require.LessOrEqual(t, fills, 10.0, "one fill, and the caught-up consumers' last reads")
	require.Zero(t, g.reads("behind"))
}

// TestAConsumerBehindTheWindowReadsTheDatabase starts a consumer from the
// beginning after another has pulled the window to the tail's end, with a
// window smaller than the history: the late one reads the database until
// it reaches the window, then the window, and applies every event once.
func TestAConsumerBehindTheWindowReadsTheDatabase(t *testing.T) {
	g := newSharedTailRig(t, eventstore.WithTailCache(1)) // the smallest window: one fill
	for round := range 5 {
		require.NoError(t, g.s.InTx(g.ctx, func(tx *eventstore.Tx) error {
			for i := round * 2000; i < (round+1)*2000; i++ {
				if _, err := tx.Append(g.ctx, eventstore.StreamAppend{Stream: fmt.Sprintf("s-%d", i%101),
					Expected: eventstore.Any, Events: []eventstore.EventData{ev("T1", i)}}); err != nil {
					return err
				}
			}
			return nil
		}))
	}
	all := g.all()
	g.run("first", 500, eventstore.Filter{})
	g.requireExactly("first", all)
	g.run("late", 300, eventstore.Filter{})
	g.requireExactly("late", all)
	require.Positive(t, g.reads("behind"), "the late consumer read the database while behind the window")
	require.Positive(t, g.reads("window"), "and the window once it caught up")
}

// TestTheWindowIsOff checks WithTailCache(0): every read goes to the
// database and nothing is counted as served from memory.
func TestTheWindowIsOff(t *testing.T) {
	g := newSharedTailRig(t, eventstore.WithTailCache(0))
	for i := range 50 {
		_, err := g.s.Append(g.ctx, fmt.Sprintf("s-%d", i%5), eventstore.Any, ev("T1", i))
		require.NoError(t, err)
	}
	all := g.all()
	g.run("a", 10, eventstore.Filter{})
	g.run("b", 10, eventstore.Filter{})
	g.requireExactly("a", all)
	g.requireExactly("b", all)
	for _, source := range []string{"window", "shared", "fill", "behind"} {
		require.Zero(t, g.reads(source), source)
	}
}

// TestACursorPastTheWindow reads through the window with cursors another
// process could hand this one (a partition it moved on): past the
// window's end the window starts again there, and cursors from before
// that read the database; every answer is what the database holds.
func TestACursorPastTheWindow(t *testing.T) {
	g := newSharedTailRig(t)
	other := eventstore.New(g.db.Pool, eventstore.WithTailCache(0)) // another process
	add := func(n int) {
		for i := range n {
			_, err := g.s.Append(g.ctx, fmt.Sprintf("s-%d", i%3), eventstore.Any, ev("T1", i))
			require.NoError(t, err)
		}
	}
	after := func(s *eventstore.Store, c eventstore.Cursor) []eventstore.RecordedEvent {
		var out []eventstore.RecordedEvent
		for {
			b, next, err := s.ReadAll(g.ctx, c, 7, eventstore.Filter{})
			require.NoError(t, err)
			if len(b) == 0 && next == c {
				return out
			}
			out, c = append(out, b...), next
		}
	}
	add(20)
	first := after(g.s, eventstore.Cursor{}) // the window: all 20
	require.Len(t, first, 20)
	add(30)
	// The other process is 25 events further: the window extends to it.
	ahead := after(other, first[19].Cursor())[24].Cursor()
	require.Equal(t, after(other, ahead), after(g.s, ahead), "a little past the window")
	require.Zero(t, g.reads("behind"))
	// Then 10,000 events further, more than two fills: the window starts
	// again there, and cursors from before it read the database.
	hi := after(g.s, first[0].Cursor())
	require.NoError(t, g.s.InTx(g.ctx, func(tx *eventstore.Tx) error {
		for i := range 10000 {
			if _, err := tx.Append(g.ctx, eventstore.StreamAppend{Stream: fmt.Sprintf("s-%d", i%3), Expected: eventstore.Any,
				Events: []eventstore.EventData{ev("T1", i)}}); err != nil {
				return err
			}
		}
		return nil
	}))
	far := after(other, hi[len(hi)-1].Cursor())[9000].Cursor()
	require.Equal(t, after(other, far), after(g.s, far), "far past the window")
	for _, from := range []int{0, 5, 19} {
		c := first[from].Cursor()
		require.Equal(t, after(other, c), after(g.s, c), "from event %d, before the window that started again", from)
	}
	require.Positive(t, g.reads("behind"))
}
