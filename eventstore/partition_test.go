package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// partitionRig runs instances of one partitioned consumer against one
// database; every instance records what it applies, with the partition
// and the instance, in the same transaction as the checkpoint.
type partitionRig struct {
	t     *testing.T
	ctx   context.Context
	s     *eventstore.Store
	db    *storetest.DB
	n     int
	lease time.Duration
}

func newPartitionRig(t *testing.T, n int, lease time.Duration) *partitionRig {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	s, db := newStore(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE applied (event_id uuid, stream text, version int, part int, instance text)`)
	require.NoError(t, err)
	return &partitionRig{t: t, ctx: ctx, s: s, db: db, n: n, lease: lease}
}

func (g *partitionRig) consumer(instance string, handle func(ctx context.Context, batch []eventstore.RecordedEvent) error) eventstore.Consumer {
	return eventstore.AsOwner(eventstore.Consumer{
		Name: "parts", BatchSize: 50, Poll: 20 * time.Millisecond, Partitions: g.n, Lease: g.lease,
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			for _, e := range batch {
				if _, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2, $3, $4, $5)`,
					e.ID, e.StreamID, e.Version, eventstore.PartitionOf(e.StreamID, g.n), instance); err != nil {
					return err
				}
			}
			if handle != nil {
				return handle(ctx, batch)
			}
			return nil
		},
	}, instance)
}

// start runs c until the returned stop is called.
func (g *partitionRig) start(c eventstore.Consumer) (stop func()) {
	ctx, cancel := context.WithCancel(g.ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = g.s.Run(ctx, c) }()
	return func() { cancel(); <-done }
}

func (g *partitionRig) appendEvents(from, to int) {
	for i := from; i < to; i++ {
		_, err := g.s.Append(g.ctx, fmt.Sprintf("s-%d", i%23), eventstore.Any, ev("E", i))
		require.NoError(g.t, err)
	}
}

// owners counts partitions by live owner.
func (g *partitionRig) owners() map[string]int {
	rows, err := g.db.Pool.Query(g.ctx, `SELECT coalesce(owner, ''), count(*) FROM consumer_partitions
		WHERE consumer = 'parts' AND lease_until > clock_timestamp() GROUP BY 1`)
	require.NoError(g.t, err)
	out := map[string]int{}
	for rows.Next() {
		var o string
		var n int
		require.NoError(g.t, rows.Scan(&o, &n))
		out[o] = n
	}
	require.NoError(g.t, rows.Err())
	return out
}

// requireExactlyOnce waits until total events are applied, then checks
// none was applied twice and each stream's events went to one partition.
func (g *partitionRig) requireExactlyOnce(total int) {
	storetest.Poll(g.t, 60*time.Second, func() (bool, string) {
		var n int
		_ = g.db.Pool.QueryRow(g.ctx, `SELECT count(DISTINCT event_id) FROM applied`).Scan(&n)
		return n == total, fmt.Sprintf("%d of %d events applied", n, total)
	})
	var rows, distinct, splitStreams int
	require.NoError(g.t, g.db.Pool.QueryRow(g.ctx, `SELECT count(*), count(DISTINCT event_id),
		(SELECT count(*) FROM (SELECT stream FROM applied GROUP BY stream HAVING count(DISTINCT part) > 1) s)
		FROM applied`).Scan(&rows, &distinct, &splitStreams))
	require.Equal(g.t, total, distinct, "an event was never applied")
	require.Equal(g.t, total, rows, "an event was applied twice")
	require.Zero(g.t, splitStreams, "a stream's events went to two partitions")
}

// TestPartitionsAreSharedAndTakenOverFromTheDead runs three processes of
// one consumer while events arrive: they split the partitions fairly,
// apply every event once, and when one dies without a word (its leases
// left to expire) the others take its partitions within 10 s and go on.
func TestPartitionsAreSharedAndTakenOverFromTheDead(t *testing.T) {
	g := newPartitionRig(t, 8, eventstore.DefaultLease)
	var batches atomic.Int64
	crashy := func(ctx context.Context, batch []eventstore.RecordedEvent) error {
		if batches.Add(1)%7 == 0 {
			return errors.New("injected crash after writing, before commit")
		}
		return nil
	}
	stopA := g.start(g.consumer("a", crashy))
	defer stopA()
	stopB := g.start(g.consumer("b", crashy))
	defer stopB()
	stopDying := g.start(eventstore.Vanishing(g.consumer("dying", crashy)))
	g.appendEvents(0, 200)

	// A fair share: 8 partitions over 3 processes, 2 or 3 each.
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		o := g.owners()
		fair := len(o) == 3
		for _, n := range o {
			fair = fair && n >= 2 && n <= 3
		}
		return fair, fmt.Sprintf("owners %v", o)
	})
	g.requireExactlyOnce(200)

	stopDying() // killed: its leases stay until they expire
	died := time.Now()
	require.NotZero(t, g.owners()["dying"], "the dead process held partitions")
	go g.appendEvents(200, 400)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		o := g.owners()
		return o["dying"] == 0 && o["a"]+o["b"] == 8, fmt.Sprintf("owners %v", o)
	})
	took := time.Since(died)
	t.Logf("a dead owner's partitions moved after %v", took)
	require.Less(t, took, 10*time.Second, "a dead owner's partitions must move within 10 s")
	g.requireExactlyOnce(400)
	var fromDead int
	require.NoError(t, g.db.Pool.QueryRow(g.ctx, `SELECT count(*) FROM applied WHERE instance = 'dying'`).Scan(&fromDead))
	require.NotZero(t, fromDead, "the dying process did part of the work before it died")
}

// TestAStalledOwnerCannotCommit: an owner stalls mid-batch long enough for
// its lease to expire and another process to take its partitions over;
// when it wakes, its batch must not commit, though the checkpoint it read
// from has not moved yet (the new owner is still working on its own first
// batch). Only the lease, checked in the batch's transaction, stops it.
func TestAStalledOwnerCannotCommit(t *testing.T) {
	g := newPartitionRig(t, 4, 3*time.Second)
	g.appendEvents(0, 40)
	stalled, wake := make(chan struct{}), make(chan struct{})
	var once sync.Once
	var logs storetest.Logs
	var committedA atomic.Bool
	a := g.consumer("a", func(ctx context.Context, _ []eventstore.RecordedEvent) error {
		once.Do(func() { close(stalled); <-wake })
		return nil
	})
	a.Logger, a.Committed = logs.Logger(), func([]eventstore.RecordedEvent) { committedA.Store(true) }
	stopA := g.start(a)
	defer stopA()
	<-stalled
	took, release := make(chan struct{}), make(chan struct{})
	var onceB sync.Once
	stopB := g.start(g.consumer("b", func(ctx context.Context, _ []eventstore.RecordedEvent) error {
		onceB.Do(func() { close(took); <-release })
		return nil
	}))
	defer stopB()
	select {
	case <-took: // b owns every partition (a stopped renewing) and is mid-batch
	case <-time.After(30 * time.Second):
		t.Fatal("b never took the stalled owner's partitions")
	}
	require.Equal(t, map[string]int{"b": 4}, g.owners())
	close(wake) // a tries to commit its batch now, from a checkpoint nobody moved yet
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return committedA.Load() || logs.Find(eventstore.AbandonedMsg) != nil, "a's batch neither committed nor rolled back"
	})
	close(release)
	require.False(t, committedA.Load(), "the stalled owner committed a batch after its lease was taken")
	g.requireExactlyOnce(40)
	var byA int
	require.NoError(t, g.db.Pool.QueryRow(g.ctx, `SELECT count(*) FROM applied WHERE instance = 'a'`).Scan(&byA))
	require.Zero(t, byA, "the stalled owner's writes were committed")
}

// TestPartitionsContinueFromTheSingleCheckpoint: a database whose consumer
// ran before partitions has one checkpoint row; every partition starts
// from it, so nothing before it is applied again and nothing after it is
// skipped.
func TestPartitionsContinueFromTheSingleCheckpoint(t *testing.T) {
	g := newPartitionRig(t, 8, eventstore.DefaultLease)
	g.appendEvents(0, 60)
	// The old consumer applied the first 25 events and saved its checkpoint.
	var done eventstore.Cursor
	var doneIDs []uuid.UUID
	rows, err := g.db.Pool.Query(g.ctx, `SELECT xid, global_position, event_id FROM events ORDER BY xid, global_position LIMIT 25`)
	require.NoError(t, err)
	for rows.Next() {
		var id uuid.UUID
		require.NoError(t, rows.Scan(&done.XID, &done.Position, &id))
		doneIDs = append(doneIDs, id)
	}
	require.NoError(t, rows.Err())
	require.NoError(t, g.s.InTx(g.ctx, func(tx *eventstore.Tx) error {
		return eventstore.SaveCheckpoint(g.ctx, tx, "parts", eventstore.Cursor{}, done)
	}))
	stop := g.start(g.consumer("new", nil))
	defer stop()
	g.appendEvents(60, 80)
	g.requireExactlyOnce(80 - 25)
	var again int
	require.NoError(t, g.db.Pool.QueryRow(g.ctx, `SELECT count(*) FROM applied WHERE event_id = ANY($1)`, doneIDs).Scan(&again))
	require.Zero(t, again, "events the single checkpoint had passed were applied again")
}

// TestRepartitionAfterAStop: a consumer stopped with 4 partitions and
// started with 8 brings the old ones to one checkpoint, splits anew, and
// applies every event once throughout.
func TestRepartitionAfterAStop(t *testing.T) {
	g := newPartitionRig(t, 4, eventstore.DefaultLease)
	g.appendEvents(0, 100)
	// Two processes, then one: the four partitions stop at different
	// checkpoints.
	stopA := g.start(g.consumer("a", nil))
	stopB := g.start(g.consumer("b", nil))
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		o := g.owners()
		return o["a"] == 2 && o["b"] == 2, fmt.Sprintf("owners %v", o)
	})
	stopA()
	g.appendEvents(100, 150)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		var n int
		_ = g.db.Pool.QueryRow(g.ctx, `SELECT count(DISTINCT (xid, position)) FROM consumer_partitions`).Scan(&n)
		return n > 1, "every partition at one checkpoint"
	})
	stopB()
	g.n = 8
	stop := g.start(g.consumer("c", nil))
	defer stop()
	g.appendEvents(150, 200)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		var n int
		_ = g.db.Pool.QueryRow(g.ctx, `SELECT count(*) FROM consumer_partitions WHERE consumer = 'parts' AND partitions = 8`).Scan(&n)
		return n == 8, fmt.Sprintf("%d of 8 new partitions", n)
	})
	// The partition recorded is the 8-way one; events applied under the old
	// split count for exactly-once, not for the split check.
	storetest.Poll(t, 60*time.Second, func() (bool, string) {
		var n int
		_ = g.db.Pool.QueryRow(g.ctx, `SELECT count(DISTINCT event_id) FROM applied`).Scan(&n)
		return n == 200, fmt.Sprintf("%d of 200 events applied", n)
	})
	var rows int
	require.NoError(t, g.db.Pool.QueryRow(g.ctx, `SELECT count(*) FROM applied`).Scan(&rows))
	require.Equal(t, 200, rows, "an event was applied twice")
}
