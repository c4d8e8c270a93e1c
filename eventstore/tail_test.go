package eventstore_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestTailNeverSkipsLateCommits is the scenario that breaks position-based
// readers, made deterministic: transaction A takes a lower position, B a
// higher one and commits first. A reader that trusts positions moves past
// A's row before it is visible and never sees it; the gap-safe tail waits.
func TestTailNeverSkipsLateCommits(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)

	appendedA, releaseA, doneA := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		doneA <- s.InTx(ctx, func(tx *eventstore.Tx) error {
			if _, err := tx.Append(ctx, eventstore.StreamAppend{Stream: "a", Expected: eventstore.NoStream,
				Events: []eventstore.EventData{ev("A", 1)}}); err != nil {
				return err
			}
			close(appendedA)
			<-releaseA
			return nil
		})
	}()
	<-appendedA
	_, err := s.Append(ctx, "b", eventstore.NoStream, ev("B", 1))
	require.NoError(t, err)

	// The naive reader: highest position seen so far.
	naive := func(after int64) []int64 {
		rows, err := db.Pool.Query(ctx, `SELECT global_position FROM events WHERE global_position > $1 ORDER BY 1`, after)
		require.NoError(t, err)
		var out []int64
		for rows.Next() {
			var p int64
			require.NoError(t, rows.Scan(&p))
			out = append(out, p)
		}
		return out
	}
	seenNaive := naive(0)
	require.Len(t, seenNaive, 1, "B is visible, A is not yet")

	got, _, err := s.ReadAll(ctx, eventstore.Cursor{}, 100, eventstore.Filter{})
	require.NoError(t, err)
	require.Empty(t, got, "the gap-safe tail holds B back while A, below it, is open")

	close(releaseA)
	require.NoError(t, <-doneA)
	settle(t, s, db)

	require.Empty(t, naive(seenNaive[0]), "the naive reader has skipped A for good")
	got, _, err = s.ReadAll(ctx, eventstore.Cursor{}, 100, eventstore.Filter{})
	require.NoError(t, err)
	require.Len(t, got, 2)
	require.Equal(t, "a", got[0].StreamID, "A committed last but its transaction started first")
	require.Equal(t, "b", got[1].StreamID)
}

// TestTailUnderConcurrentAppenders runs many appenders, some holding their
// transactions open, against a tailing reader, and checks that the reader
// sees every event exactly once and every stream in version order.
func TestTailUnderConcurrentAppenders(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, _ := newStore(t)
	const writers, appendsPerWriter = 8, 60

	var mu sync.Mutex
	written := map[uuid.UUID]string{}
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			versions := map[string]int{}
			for i := range appendsPerWriter {
				// Each append touches 1–3 of this writer's 5 streams.
				var batch []eventstore.StreamAppend
				used := map[string]bool{}
				for range 1 + rng.IntN(3) {
					stream := fmt.Sprintf("w%d-s%d", w, rng.IntN(5))
					if used[stream] {
						continue
					}
					used[stream] = true
					var evs []eventstore.EventData
					for range 1 + rng.IntN(3) {
						evs = append(evs, withID(ev("E", i)))
					}
					batch = append(batch, eventstore.StreamAppend{Stream: stream, Expected: eventstore.Exact(versions[stream]), Events: evs})
				}
				if versions[batch[0].Stream] == 0 {
					batch[0].Expected = eventstore.NoStream
				}
				for k := range batch {
					if versions[batch[k].Stream] == 0 {
						batch[k].Expected = eventstore.NoStream
					}
				}
				hold := i%7 == 3 // some transactions stay open after appending
				err := s.InTx(ctx, func(tx *eventstore.Tx) error {
					if _, err := tx.Append(ctx, batch...); err != nil {
						return err
					}
					if hold {
						time.Sleep(time.Duration(10+rng.IntN(40)) * time.Millisecond) // fault injection: a slow committer
					}
					return nil
				})
				if err != nil {
					t.Errorf("writer %d: %v", w, err)
					return
				}
				mu.Lock()
				for _, a := range batch {
					versions[a.Stream] += len(a.Events)
					for _, e := range a.Events {
						written[e.ID] = a.Stream
					}
				}
				mu.Unlock()
			}
		}()
	}
	writersDone := make(chan struct{})
	go func() { wg.Wait(); close(writersDone) }()

	seen := map[uuid.UUID]int{}
	lastVersion := map[string]int{}
	var cursor eventstore.Cursor
	finished := false
	for {
		changed := s.Changed()
		batch, next, err := s.ReadAll(ctx, cursor, 37, eventstore.Filter{})
		require.NoError(t, err)
		for _, e := range batch {
			seen[e.ID]++
			require.Equal(t, lastVersion[e.StreamID]+1, e.Version, "stream %s out of order", e.StreamID)
			lastVersion[e.StreamID] = e.Version
			require.True(t, cursor.XID < e.XID || (cursor.XID == e.XID && cursor.Position < e.Position), "tail went backwards")
			cursor = e.Cursor()
		}
		require.False(t, next.Less(cursor))
		cursor = next
		if len(batch) > 0 {
			continue
		}
		if finished {
			// Writers are done; a transaction open elsewhere on the server
			// can still hold the horizon back, so read until every written
			// event is in (or the deadline).
			mu.Lock()
			all := len(seen) >= len(written)
			mu.Unlock()
			if all {
				break
			}
		}
		select {
		case <-writersDone:
			finished, writersDone = true, nil
		case <-changed:
		case <-time.After(50 * time.Millisecond):
		case <-ctx.Done():
			t.Fatal("timed out")
		}
	}
	require.NotEmpty(t, written)
	require.Len(t, seen, len(written), "every written event seen")
	for id, n := range seen {
		require.Equal(t, 1, n, "event %s seen %d times", id, n)
		require.Contains(t, written, id)
	}
}

func TestTailFiltersByAccountAndType(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	mk := func(acc, typ string) eventstore.EventData {
		e := ev(typ, 1)
		e.Metadata.AccountID = acc
		return e
	}
	_, err := s.AppendMulti(ctx, []eventstore.StreamAppend{
		{Stream: "x1", Expected: eventstore.NoStream, Events: []eventstore.EventData{mk("acc-a", "T1"), mk("acc-a", "T2")}},
		{Stream: "x2", Expected: eventstore.NoStream, Events: []eventstore.EventData{mk("acc-b", "T1")}},
	})
	require.NoError(t, err)
	settle(t, s, db)
	got, _, err := s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{AccountID: "acc-a"})
	require.NoError(t, err)
	require.Len(t, got, 2)
	got, _, err = s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{Types: []string{"T1"}})
	require.NoError(t, err)
	require.Len(t, got, 2)
	got, next, err := s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{AccountID: "acc-b", Types: []string{"T2"}})
	require.NoError(t, err)
	require.Empty(t, got)

	all, last, err := s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{})
	require.NoError(t, err)
	require.Equal(t, all[2].Cursor(), last)
	require.Equal(t, all[2].Cursor(), next, "a short, filtered page jumps the cursor to acc-b's newest event")
	got, next, err = s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{Types: []string{"T2"}})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, all[2].Cursor(), next, "a short page jumps past events the filter skipped")
	got, next, err = s.ReadAll(ctx, eventstore.Cursor{}, 1, eventstore.Filter{Types: []string{"T1"}})
	require.NoError(t, err)
	require.Len(t, got, 1)
	require.Equal(t, all[0].Cursor(), next, "a full page does not jump")
	require.NoError(t, err)
	c, ok, err := s.CursorAt(ctx, all[1].Position, "acc-a")
	require.NoError(t, err)
	require.True(t, ok)
	require.Equal(t, all[1].Cursor(), c)
	_, ok, err = s.CursorAt(ctx, all[1].Position, "acc-b")
	require.NoError(t, err)
	require.False(t, ok, "another tenant's position is not a cursor")
	parsed, err := eventstore.ParseCursor(c.String())
	require.NoError(t, err)
	require.Equal(t, c, parsed)
}

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

// settle waits until the tail's horizon has passed every committed event:
// a transaction open a moment longer in this database holds it back. Once
// settled, reads are stable: no event can appear below the horizon.
func settle(t *testing.T, s *eventstore.Store, db *storetest.DB) {
	t.Helper()
	ctx := context.Background()
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		var n int
		if err := db.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
			return false, err.Error()
		}
		got, _, err := s.ReadAll(ctx, eventstore.Cursor{}, n+1, eventstore.Filter{})
		return err == nil && len(got) == n, fmt.Sprintf("the tail read %d of %d events (%v)", len(got), n, err)
	})
}

// TestTailIsNotHeldByAnotherDatabase: transaction ids are shared by every
// database of a server, but a transaction open in another database can
// never write here, so it must not hold this store's tail back (it did:
// the horizon was the server-wide xmin, and a bulk load in one database
// stalled every other database's consumers for as long as it ran). A
// transaction open in this database still holds the tail, whether or not
// it has written an event yet.
func TestTailIsNotHeldByAnotherDatabase(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	other := storetest.NewDB(t)

	// Hold a transaction with an id open in the other database.
	foreign, err := other.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = foreign.Rollback(ctx) }()
	var foreignXID string
	require.NoError(t, foreign.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(&foreignXID))

	_, err = s.Append(ctx, "a", eventstore.NoStream, ev("A", 1))
	require.NoError(t, err)
	// The horizon may still wait on a transaction of this database that
	// some maintenance left open for a moment, never on the foreign one:
	// give it a few seconds, far less than the foreign one stays open.
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		got, _, err := s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{})
		return err == nil && len(got) == 1, fmt.Sprintf("read %d events (%v) while transaction %s is open in another database", len(got), err, foreignXID)
	})
	head, err := s.Head(ctx)
	require.NoError(t, err)
	got, _, err := s.ReadAll(ctx, eventstore.Cursor{}, 10, eventstore.Filter{})
	require.NoError(t, err)
	require.Equal(t, got[0].Cursor(), head, "the head is past the event too")

	// A transaction of this database that holds an id but has written
	// nothing yet still holds the tail: it may append any moment.
	local, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = local.Rollback(ctx) }()
	require.NoError(t, local.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(new(string)))
	_, err = s.Append(ctx, "b", eventstore.NoStream, ev("B", 1))
	require.NoError(t, err)
	for range 10 {
		got, next, err := s.ReadAll(ctx, got[0].Cursor(), 10, eventstore.Filter{})
		require.NoError(t, err)
		require.Empty(t, got, "an open transaction of this database holds the tail back")
		require.Equal(t, head, next)
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, local.Rollback(ctx))
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		got, _, err := s.ReadAll(ctx, head, 10, eventstore.Filter{})
		return err == nil && len(got) == 1 && got[0].StreamID == "b", fmt.Sprintf("read %d events (%v) after the local transaction ended", len(got), err)
	})
}
