package projections_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/projections"
)

// referenceProjector runs the projections live into a schema of their own
// (with its own checkpoints table), from position zero, for the whole test:
// the model a projector that was never rebuilt has.
func referenceProjector(t *testing.T, f *fixture) *pgxpool.Pool {
	t.Helper()
	ddl := []string{`CREATE SCHEMA reference`, `CREATE TABLE reference.checkpoints (LIKE public.checkpoints INCLUDING ALL)`,
		`CREATE TABLE reference.consumer_partitions (LIKE public.consumer_partitions INCLUDING ALL)`,
		`CREATE TABLE reference.consumer_members (LIKE public.consumer_members INCLUDING ALL)`}
	for _, p := range projections.All() {
		for _, table := range p.Tables {
			ddl = append(ddl, fmt.Sprintf(`CREATE TABLE reference.%s (LIKE public.%s INCLUDING ALL)`, table, table))
		}
	}
	for _, s := range ddl {
		_, err := f.db.Pool.Exec(f.ctx, s)
		require.NoError(t, err)
	}
	cfg, err := pgxpool.ParseConfig(f.db.URL)
	require.NoError(t, err)
	cfg.ConnConfig.RuntimeParams["search_path"] = "reference, public"
	pool, err := pgxpool.NewWithConfig(f.ctx, cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	r, err := projections.NewRunner(projections.Config{Store: eventstore.New(pool), Logger: quiet, Poll: 20 * time.Millisecond})
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return pool
}

func (f *fixture) referenceCaughtUp(refPool *pgxpool.Pool) {
	f.t.Helper()
	storetest.Poll(f.t, 60*time.Second, func() (bool, string) {
		st, err := projections.Statuses(f.ctx, refPool, time.Now())
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st {
			if s.EventsBehind > 0 {
				return false, fmt.Sprintf("reference behind: %+v", st)
			}
		}
		return true, ""
	})
}

// TestRebuildWhileEventsArrive rebuilds both projections while orders keep
// flowing and readers keep reading. Readers must never see the model go
// back (a half-built table would), and once the writers stop the rebuilt
// model must equal, row for row, the one a never-rebuilt projector built.
func TestRebuildWhileEventsArrive(t *testing.T) {
	f := newFixture(t)
	f.run(projections.Config{})
	refPool := referenceProjector(t, f)
	acct := f.openAccount(1_000_000_000)
	tenant := projections.ForAccount(acct)

	// Writers: orders through their whole lifecycle, until told to stop.
	var orders atomic.Int64
	stopWriting := make(chan struct{})
	var writers sync.WaitGroup
	firstOrder := make(chan string, 1)
	writers.Add(1)
	go func() {
		defer writers.Done()
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				return
			default:
			}
			order, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002", "+4915100000003", "+4915100000004")
			f.deliverAll(ids[0], ids[1])
			f.queue(ids[2])
			f.route(ids[2], "sim-b")
			f.retry(ids[2], domain.CodeProviderUnavailable, domain.StageSubmit)
			f.queue(ids[2])
			f.route(ids[2], "sim-a")
			f.submit(ids[2], 70*time.Millisecond)
			f.deliver(ids[2])
			f.queue(ids[3])
			f.route(ids[3], "sim-a")
			f.fail(ids[3], domain.CodeRejected, domain.StageSubmit)
			f.settle(order, ids...)
			if i == 0 {
				firstOrder <- order
			}
			orders.Add(1)
		}
	}()
	// Readers: the count of message rows and of completed orders only grow,
	// and a completed order stays visible and completed.
	first := <-firstOrder
	f.caughtUp()
	stopReading := make(chan struct{})
	readErrs := make(chan error, 1)
	var reads atomic.Int64
	go func() {
		var lastMessages, lastCompleted int64
		for {
			select {
			case <-stopReading:
				readErrs <- nil
				return
			default:
			}
			var messages, completed int64
			err := f.db.Pool.QueryRow(f.ctx, `SELECT (SELECT count(*) FROM read_messages), (SELECT count(*) FROM read_orders WHERE completed_at IS NOT NULL)`).Scan(&messages, &completed)
			if err == nil && (messages < lastMessages || completed < lastCompleted) {
				err = fmt.Errorf("the model went back: %d messages and %d completed orders after %d and %d", messages, completed, lastMessages, lastCompleted)
			}
			if err == nil {
				var o projections.Order
				o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, first)
				if err == nil && o.State() != domain.OrderStateCompleted {
					err = fmt.Errorf("order %s shows %s", first, o.State())
				}
			}
			if err != nil {
				readErrs <- err
				return
			}
			lastMessages, lastCompleted = messages, completed
			reads.Add(1)
		}
	}()

	for _, name := range projections.Names() {
		before := orders.Load()
		var phases []string
		rep, err := projections.Rebuild(f.ctx, f.db.Pool, name, func(p projections.RebuildProgress) { phases = append(phases, p.Phase) })
		require.NoError(t, err, name)
		require.Positive(t, rep.Events)
		require.Contains(t, phases, "swap")
		t.Logf("rebuilt %s: %d events in %s, swap held the projector %s; %d orders written meanwhile",
			name, rep.Events, rep.Duration.Round(time.Millisecond), rep.SwapPause.Round(time.Microsecond), orders.Load()-before)
	}
	// A few more orders after the swaps, for the live projector to apply on
	// top of the rebuilt tables.
	target := orders.Load() + 3
	storetest.Poll(t, 60*time.Second, func() (bool, string) { return orders.Load() >= target, "writers stalled" })
	close(stopWriting)
	writers.Wait()
	close(stopReading)
	require.NoError(t, <-readErrs)
	require.Positive(t, reads.Load())

	f.caughtUp()
	f.referenceCaughtUp(refPool)
	live, ref := f.dump("public"), f.dump("reference")
	for table := range ref {
		require.Equal(t, ref[table], live[table], "table %s: the rebuilt model differs from the never-rebuilt one", table)
	}
	require.Len(t, live["read_orders"], int(orders.Load()))
	f.requireVerified()
}

// TestRebuildHandsItsCursorToTheProjector rebuilds while the live
// projector is far behind (stopped), then restarts it: it must continue
// from where the rebuilt tables are, not apply its backlog a second time.
func TestRebuildHandsItsCursorToTheProjector(t *testing.T) {
	f := newFixture(t)
	stop := f.start(projections.Config{})
	acct := f.openAccount(100_000_000)
	settled := func() {
		order, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002")
		f.deliverAll(ids[0])
		f.queue(ids[1])
		f.fail(ids[1], domain.CodeNoRoute, domain.StageRouting)
		f.settle(order, ids...)
	}
	settled()
	f.caughtUp()
	stop()
	for range 3 {
		settled()
	}
	for _, name := range projections.Names() {
		_, err := projections.Rebuild(f.ctx, f.db.Pool, name, nil)
		require.NoError(t, err)
	}
	f.run(projections.Config{})
	f.caughtUp()
	refPool := referenceProjector(t, f)
	f.referenceCaughtUp(refPool)
	require.Equal(t, f.dump("reference"), f.dump("public"), "the projector applied what the rebuild had already applied")
	f.requireVerified()
}

// TestRebuildRefusesASecondRebuild: one rebuild of a projection at a time.
func TestRebuildRefusesASecondRebuild(t *testing.T) {
	f := newFixture(t)
	conn, err := f.db.Pool.Acquire(f.ctx)
	require.NoError(t, err)
	defer conn.Release()
	// Hold the rebuild lock the way a running rebuild does.
	p, err := projections.Lookup("accounts")
	require.NoError(t, err)
	_, err = conn.Exec(f.ctx, `SELECT pg_advisory_lock($1)`, projections.RebuildKey(p))
	require.NoError(t, err)
	_, err = projections.Rebuild(f.ctx, f.db.Pool, "accounts", nil)
	require.ErrorIs(t, err, projections.ErrRebuildRunning)
	_, err = projections.Rebuild(f.ctx, f.db.Pool, "nope", nil)
	require.ErrorIs(t, err, projections.ErrUnknownProjection)
}

// TestRebuildWaitsForWhatWasCommittedBeforeIt: events committed before a
// rebuild began but held back from the tail by an older open transaction
// are in the rebuilt model; the rebuild waits for the horizon rather than
// swap in a model behind what its caller had seen committed.
func TestRebuildWaitsForWhatWasCommittedBeforeIt(t *testing.T) {
	f := newFixture(t)
	acct := f.openAccount(100_000_000)
	// An older writer, still open: it holds the tail's horizon back.
	older, err := f.db.Pool.Begin(f.ctx)
	require.NoError(t, err)
	defer func() { _ = older.Rollback(f.ctx) }()
	_, err = older.Exec(f.ctx, `SELECT pg_current_xact_id()`)
	require.NoError(t, err)
	_, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002")

	released := make(chan struct{})
	go func() {
		time.Sleep(300 * time.Millisecond)
		_ = older.Rollback(f.ctx)
		close(released)
	}()
	rep, err := projections.Rebuild(f.ctx, f.db.Pool, "messages", nil)
	require.NoError(t, err)
	select {
	case <-released:
	default:
		t.Fatal("the rebuild swapped while events committed before it were still held back")
	}
	var rows int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FROM read_messages WHERE message_id = ANY($1)`, ids).Scan(&rows))
	require.Equal(t, len(ids), rows)
	require.Positive(t, rep.Events)
}
