package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// statementCounter counts the statements a pool sends, by name.
type statementCounter struct {
	mu    sync.Mutex
	names []string
}

func (c *statementCounter) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	c.mu.Lock()
	c.names = append(c.names, eventstore.StatementName(d.SQL))
	c.mu.Unlock()
	return ctx
}

func (c *statementCounter) TraceQueryEnd(context.Context, *pgx.Conn, pgx.TraceQueryEndData) {}

func (c *statementCounter) take() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.names
	c.names = nil
	return out
}

// The workers' appends (every stream at an exact version, one event each)
// are one statement between BEGIN and COMMIT, however many streams.
func TestExactAppendIsOneStatement(t *testing.T) {
	ctx := context.Background()
	tr := &statementCounter{}
	db := storetest.NewDBWith(t, eventstore.PoolConfig{MaxConns: 4, Tracer: tr})
	s := eventstore.New(db.Pool)
	var batch []eventstore.StreamAppend
	for i := range 50 {
		stream := fmt.Sprintf("m-%02d", i)
		_, err := s.Append(ctx, stream, eventstore.NoStream, ev("Accepted", i))
		require.NoError(t, err)
		batch = append(batch, eventstore.StreamAppend{Stream: stream, Expected: eventstore.Exact(1),
			Events: []eventstore.EventData{ev("Queued", i)}})
	}
	tr.take()
	res, err := s.AppendMulti(ctx, batch)
	require.NoError(t, err)
	var sent []string
	for _, n := range tr.take() {
		if n != "begin" && n != "commit" {
			sent = append(sent, n)
		}
	}
	require.Equal(t, []string{"append.exact"}, sent)
	for i, r := range res {
		require.Equal(t, eventstore.AppendResult{Stream: batch[i].Stream, FromVersion: 2, ToVersion: 2}, r, "results in the batch's order")
	}
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// One stale stream fails the whole exact append, although the statement
// already wrote the others: the transaction refuses to commit.
func TestExactAppendConflictWritesNothing(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	for _, st := range []string{"a", "b", "c"} {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Start", 0))
		require.NoError(t, err)
	}
	_, err := s.Append(ctx, "b", eventstore.Exact(1), ev("Moved", 1))
	require.NoError(t, err)
	stale := []eventstore.StreamAppend{
		{Stream: "a", Expected: eventstore.Exact(1), Events: []eventstore.EventData{ev("X", 1)}},
		{Stream: "b", Expected: eventstore.Exact(1), Events: []eventstore.EventData{ev("X", 1)}},
		{Stream: "c", Expected: eventstore.Exact(1), Events: []eventstore.EventData{ev("X", 1)}},
	}
	_, err = s.AppendMulti(ctx, stale)
	var ce *eventstore.ConflictError
	require.ErrorAs(t, err, &ce)
	require.Equal(t, "b", ce.Stream)
	require.Equal(t, 2, ce.Actual)
	require.Equal(t, 4, count(t, db, ""), "nothing of the failed append is stored")

	// A caller that swallows the error cannot commit the other streams'
	// events either (the one-statement path refuses to commit them).
	_ = s.InTx(ctx, func(tx *eventstore.Tx) error {
		_, err := tx.Append(ctx, stale...)
		require.ErrorIs(t, err, eventstore.ErrWrongExpectedVersion)
		return nil
	})
	require.Equal(t, 4, count(t, db, ""))

	err = s.InTx(ctx, func(tx *eventstore.Tx) error {
		_ = tx.Savepoint(ctx, func(tx *eventstore.Tx) error {
			_, _ = tx.Append(ctx, stale...)
			return nil
		})
		// The transaction goes on after the savepoint.
		_, err = tx.Append(ctx, eventstore.StreamAppend{Stream: "c", Expected: eventstore.Exact(1), Events: []eventstore.EventData{ev("Y", 2)}})
		return err
	})
	require.NoError(t, err)
	require.Equal(t, 5, count(t, db, ""))
	require.Equal(t, 0, count(t, db, "WHERE type = 'X'"))
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// A retried exact append (the same event ids after a lost commit
// acknowledgement) is recognised, alone or beside new work.
func TestExactAppendRetryIsRecognised(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	for _, st := range []string{"a", "b"} {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Start", 0))
		require.NoError(t, err)
	}
	e := withID(ev("Queued", 1))
	first, err := s.Append(ctx, "a", eventstore.Exact(1), e)
	require.NoError(t, err)
	again, err := s.AppendMulti(ctx, []eventstore.StreamAppend{
		{Stream: "b", Expected: eventstore.Exact(1), Events: []eventstore.EventData{ev("Queued", 2)}},
		{Stream: "a", Expected: eventstore.Exact(1), Events: []eventstore.EventData{e}},
	})
	require.NoError(t, err)
	require.Equal(t, eventstore.AppendResult{Stream: "b", FromVersion: 2, ToVersion: 2}, again[0])
	require.Equal(t, eventstore.AppendResult{Stream: "a", FromVersion: first.FromVersion, ToVersion: first.ToVersion, AlreadyStored: true}, again[1])
	require.Equal(t, 4, count(t, db, ""))

	// The same id at another expected version is not a retry.
	_, err = s.Append(ctx, "b", eventstore.Exact(2), e)
	require.Error(t, err)
	require.Equal(t, 4, count(t, db, ""))
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// Multi-stream exact appends racing over the same streams, listed in
// opposite orders and against the general path's lock: they queue, never
// deadlock, and for each version only one of them is stored.
func TestRacingExactAppendsInAnyOrder(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	streams := []string{"x", "y", "z"}
	for _, st := range streams {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("Start", 0))
		require.NoError(t, err)
	}
	const writers, rounds = 6, 15
	var stored atomic.Int64 // events each stream should hold
	stored.Store(1)
	for round := 1; round <= rounds; round++ {
		var wg sync.WaitGroup
		start := make(chan struct{})
		for w := range writers {
			wg.Go(func() {
				order := streams
				if w%2 == 1 {
					order = []string{"z", "y", "x"}
				}
				events := []eventstore.EventData{ev("Step", w)}
				if w == writers-1 { // two events a stream: the general path
					events = append(events, ev("Step", w))
				}
				<-start
				cur, err := s.ReadStream(ctx, "x", 1)
				if err != nil {
					t.Error(err)
					return
				}
				batch := make([]eventstore.StreamAppend, len(order))
				for i, st := range order {
					batch[i] = eventstore.StreamAppend{Stream: st, Expected: eventstore.Exact(len(cur)), Events: events}
				}
				_, err = s.AppendMulti(ctx, batch)
				switch {
				case err == nil:
					stored.Add(int64(len(events)))
				case errors.Is(err, eventstore.ErrWrongExpectedVersion):
				default:
					t.Errorf("round %d writer %d: %v", round, w, err)
				}
			})
		}
		close(start)
		wg.Wait()
	}
	for _, st := range streams {
		require.Equal(t, int(stored.Load()), count(t, db, "WHERE stream_id = $1", st), st)
	}
	require.Greater(t, stored.Load(), int64(rounds), "every round had a winner")
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}
