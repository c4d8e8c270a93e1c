package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

func ev(typ string, n int) eventstore.EventData {
	return eventstore.EventData{Type: typ, SchemaVersion: 1, Data: []byte(fmt.Sprintf(`{"n":%d,"text":"<é>"}`, n)),
		Metadata: eventstore.Metadata{AccountID: "acc1", Actor: "test"}}
}

func withID(e eventstore.EventData) eventstore.EventData {
	e.ID = uuid.Must(uuid.NewV7())
	return e
}

func newStore(t *testing.T, opts ...eventstore.Option) (*eventstore.Store, *storetest.DB) {
	db := storetest.NewDB(t)
	return eventstore.New(db.Pool, opts...), db
}

func count(t *testing.T, db *storetest.DB, where string, args ...any) int {
	t.Helper()
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), "SELECT count(*) FROM events "+where, args...).Scan(&n))
	return n
}

func TestAppendExpectedVersions(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)

	res, err := s.Append(ctx, "s-1", eventstore.NoStream, ev("A", 1), ev("B", 2))
	require.NoError(t, err)
	require.Equal(t, eventstore.AppendResult{Stream: "s-1", FromVersion: 1, ToVersion: 2}, res)

	_, err = s.Append(ctx, "s-1", eventstore.NoStream, ev("A", 3))
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion, "stream must not exist")

	_, err = s.Append(ctx, "s-1", eventstore.Exact(1), ev("A", 3))
	var ce *eventstore.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, 2, ce.Actual)

	res, err = s.Append(ctx, "s-1", eventstore.Exact(2), ev("C", 3))
	require.NoError(t, err)
	require.Equal(t, 3, res.ToVersion)

	_, err = s.Append(ctx, "missing", eventstore.Exact(1), ev("A", 1))
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion, "exact version of a missing stream")

	res, err = s.Append(ctx, "s-1", eventstore.Any, ev("D", 4))
	require.NoError(t, err)
	require.Equal(t, 4, res.FromVersion)
	res, err = s.Append(ctx, "s-new", eventstore.Any, ev("D", 1))
	require.NoError(t, err)
	require.Equal(t, 1, res.FromVersion)

	require.Equal(t, 4, count(t, db, "WHERE stream_id = 's-1'"), "conflicting appends wrote nothing")
	evs, err := s.ReadStream(ctx, "s-1", 1)
	require.NoError(t, err)
	for i, e := range evs {
		require.Equal(t, i+1, e.Version)
		require.Equal(t, "acc1", e.AccountID)
		require.Equal(t, "test", e.Metadata.Actor)
	}
	require.Equal(t, []string{"A", "B", "C", "D"}, []string{evs[0].Type, evs[1].Type, evs[2].Type, evs[3].Type})
	tail, err := s.ReadStream(ctx, "s-1", 3)
	require.NoError(t, err)
	require.Len(t, tail, 2)
}

func TestAppendRejectsMalformed(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	for name, batch := range map[string][]eventstore.StreamAppend{
		"empty":        nil,
		"no events":    {{Stream: "a", Expected: eventstore.NoStream}},
		"no stream":    {{Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("A", 1)}}},
		"twice":        {{Stream: "a", Events: []eventstore.EventData{ev("A", 1)}}, {Stream: "a", Events: []eventstore.EventData{ev("A", 1)}}},
		"no type":      {{Stream: "a", Events: []eventstore.EventData{{SchemaVersion: 1, Data: []byte(`{}`)}}}},
		"bad expected": {{Stream: "a", Expected: -7, Events: []eventstore.EventData{ev("A", 1)}}},
	} {
		_, err := s.AppendMulti(ctx, batch)
		require.ErrorIs(t, err, eventstore.ErrInvalidAppend, name)
	}
	_, err := s.Append(ctx, "a", eventstore.NoStream, eventstore.EventData{Type: "A", SchemaVersion: 1, Data: []byte(`{not json`)})
	require.Error(t, err)
}

func TestAppendIsIdempotentByEventID(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	a, b := withID(ev("A", 1)), withID(ev("B", 2))
	first, err := s.Append(ctx, "s", eventstore.NoStream, a, b)
	require.NoError(t, err)

	// The same append again (a client retrying after a lost commit ack).
	again, err := s.Append(ctx, "s", eventstore.NoStream, a, b)
	require.NoError(t, err)
	require.True(t, again.AlreadyStored)
	require.Equal(t, first.FromVersion, again.FromVersion)
	require.Equal(t, first.ToVersion, again.ToVersion)
	again, err = s.Append(ctx, "s", eventstore.Any, a, b)
	require.NoError(t, err)
	require.True(t, again.AlreadyStored)
	require.Equal(t, 2, count(t, db, ""))

	// A partial retry or an id reused elsewhere is not a retry.
	_, err = s.Append(ctx, "s", eventstore.Exact(1), b, withID(ev("C", 3)))
	require.Error(t, err)
	_, err = s.Append(ctx, "other", eventstore.NoStream, a)
	require.Error(t, err)
	require.Equal(t, 2, count(t, db, ""))
}

func TestMultiStreamAppendIsAtomic(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	_, err := s.Append(ctx, "taken", eventstore.NoStream, ev("A", 1))
	require.NoError(t, err)
	_, err = s.AppendMulti(ctx, []eventstore.StreamAppend{
		{Stream: "fresh-1", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("A", 1)}},
		{Stream: "taken", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("A", 1)}},
		{Stream: "fresh-2", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("A", 1)}},
	})
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
	require.Equal(t, 1, count(t, db, ""), "nothing of a failed multi-stream append is stored")
	var streams int
	require.NoError(t, db.Pool.QueryRow(ctx, "SELECT count(*) FROM streams").Scan(&streams))
	require.Equal(t, 1, streams)
}

func TestBulkAppendUsesCopyAndFallsBack(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t, eventstore.WithCopyThreshold(50))
	_, err := s.Append(ctx, "account", eventstore.NoStream, ev("Opened", 1))
	require.NoError(t, err)
	batch := []eventstore.StreamAppend{{Stream: "account", Expected: eventstore.Exact(1), Events: []eventstore.EventData{withID(ev("Reserved", 2))}}}
	for i := range 500 {
		batch = append(batch, eventstore.StreamAppend{Stream: fmt.Sprintf("m-%04d", i), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{withID(ev("Accepted", i))}})
	}
	res, err := s.AppendMulti(ctx, batch)
	require.NoError(t, err)
	require.Len(t, res, 501)
	require.Equal(t, 2, res[0].ToVersion)
	require.Equal(t, 502, count(t, db, ""))

	// Retrying the whole batch: COPY hits unique violations, the general
	// path recognises every append as already stored.
	res, err = s.AppendMulti(ctx, batch)
	require.NoError(t, err)
	for _, r := range res {
		require.True(t, r.AlreadyStored, r.Stream)
	}
	require.Equal(t, 502, count(t, db, ""))

	// One taken stream in a bulk append fails the whole append.
	batch2 := []eventstore.StreamAppend{{Stream: "m-0007", Expected: eventstore.NoStream, Events: []eventstore.EventData{ev("X", 1)}}}
	for i := range 100 {
		batch2 = append(batch2, eventstore.StreamAppend{Stream: fmt.Sprintf("n-%04d", i), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{ev("Accepted", i)}})
	}
	_, err = s.AppendMulti(ctx, batch2)
	require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
	require.Equal(t, 502, count(t, db, ""))
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

func TestRacingAppendsExactlyOneWins(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	const writers, rounds = 8, 20
	_, err := s.Append(ctx, "hot", eventstore.NoStream, ev("Start", 0))
	require.NoError(t, err)
	for round := 1; round <= rounds; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins, conflicts := 0, 0
		start := make(chan struct{})
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := s.Append(ctx, "hot", eventstore.Exact(round), ev("Step", w))
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, eventstore.ErrWrongExpectedVersion):
					conflicts++
				default:
					t.Errorf("round %d: %v", round, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, 1, wins, "round %d", round)
		require.Equal(t, writers-1, conflicts, "round %d", round)
	}
	require.Equal(t, rounds+1, count(t, db, "WHERE stream_id = 'hot'"))

	// Racing creators of one new stream: one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.Append(ctx, "brand-new", eventstore.NoStream, ev("Create", 1))
			if err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
				t.Errorf("create: %v", err)
			}
		}()
	}
	wg.Wait()
	require.Equal(t, 1, wins)
	require.Equal(t, 1, count(t, db, "WHERE stream_id = 'brand-new'"))

	// Racing Any-appends all succeed, each at its own version.
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Append(ctx, "any-stream", eventstore.Any, ev("Any", 1)); err != nil {
				t.Errorf("any: %v", err)
			}
		}()
	}
	wg.Wait()
	evs, err := s.ReadStream(ctx, "any-stream", 1)
	require.NoError(t, err)
	require.Len(t, evs, writers)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

func TestEventsAreImmutableInTheDatabase(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	_, err := s.Append(ctx, "s", eventstore.NoStream, ev("A", 1))
	require.NoError(t, err)
	for _, stmt := range []string{
		`UPDATE events SET type = 'B'`,
		`DELETE FROM events`,
		`TRUNCATE events`,
	} {
		_, err := db.Pool.Exec(ctx, stmt)
		require.ErrorContains(t, err, "immutable", stmt)
	}
	require.Equal(t, 1, count(t, db, "WHERE type = 'A'"))
}

func TestMigrateIsRepeatable(t *testing.T) {
	db := storetest.NewDB(t)
	require.NoError(t, eventstore.Migrate(context.Background(), db.Pool))
	require.NoError(t, eventstore.Migrate(context.Background(), db.Pool))
}
