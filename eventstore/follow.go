package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// follower is one Run of a partitioned consumer: the partitions it owns,
// each with its checkpoint as committed, and the one tail read they share.
type follower struct {
	s     *Store
	c     Consumer
	log   *slog.Logger
	owner string
	lease time.Duration
	n     int // partitions, as the database holds them
	want  int // partitions, as configured: differs while repartitioning
	owned map[int]Cursor

	nextRound time.Time // the next lease round (renew, rebalance)
	warned    time.Time
}

// abandonedMsg is logged (at debug) for a batch rolled back because a
// partition's checkpoint moved or its lease was gone.
const abandonedMsg = "consumer batch abandoned: a partition moved on without it"

// run follows the tail until ctx ends.
func (f *follower) run(ctx context.Context) error {
	defer f.leave()
	backoff := time.Duration(0)
	var err error
	for ctx.Err() == nil {
		if err != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, ErrCheckpointMoved):
				f.log.Debug(abandonedMsg, "err", err)
			default:
				f.log.Error("consumer batch failed, retrying", "err", err, "backoff", backoff)
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			Sleep(ctx, backoff)
			f.nextRound = time.Time{} // start again from the committed state
			err = nil
			continue
		}
		if !time.Now().Before(f.nextRound) {
			if err = f.round(ctx); err != nil {
				continue
			}
			f.nextRound = time.Now().Add(f.lease / 3)
		}
		if len(f.owned) == 0 {
			Sleep(ctx, time.Until(f.nextRound))
			continue
		}
		if _, err = f.step(ctx); err == nil {
			backoff = 0
		}
	}
	return ctx.Err()
}

// round renews this process's leases, reloads their checkpoints, and moves
// its share towards partitions / live processes: releasing what it holds
// beyond that, taking free or expired partitions up to it.
func (f *follower) round(ctx context.Context) error {
	if f.n == 0 {
		n, err := f.s.partitionsOf(ctx, f.c.Name, f.want)
		if err != nil {
			return err
		}
		f.n = n
	}
	var members int
	secs := f.lease.Seconds()
	if err := f.s.pool.QueryRow(ctx, heartbeatSQL, f.c.Name, f.owner, secs).Scan(&members); err != nil {
		return fmt.Errorf("%s heartbeat: %w", f.c.Name, err)
	}
	rows, err := f.s.pool.Query(ctx, renewSQL, f.c.Name, f.owner, secs)
	if err != nil {
		return fmt.Errorf("%s renew: %w", f.c.Name, err)
	}
	owned := map[int]Cursor{}
	for rows.Next() {
		var p int
		var c Cursor
		if err := rows.Scan(&p, &c.XID, &c.Position); err != nil {
			rows.Close()
			return fmt.Errorf("%s renew: %w", f.c.Name, err)
		}
		owned[p] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("%s renew: %w", f.c.Name, err)
	}
	share := (f.n + members - 1) / members
	if f.n != f.want {
		// Repartitioning takes every partition, or waits for them.
		share = f.n
		if len(owned) < f.n && time.Since(f.warned) > time.Minute {
			f.warned = time.Now()
			f.log.Warn("consumer waits for its other processes to stop before it repartitions",
				"partitions", f.n, "configured", f.want)
		}
	}
	if extra := len(owned) - share; extra > 0 {
		ps := sortedKeys(owned)
		drop := ps[len(ps)-extra:]
		if _, err := f.s.pool.Exec(ctx, releaseSQL, f.c.Name, f.owner, drop); err != nil {
			return fmt.Errorf("%s release: %w", f.c.Name, err)
		}
		for _, p := range drop {
			delete(owned, p)
		}
	}
	if missing := share - len(owned); missing > 0 {
		rows, err := f.s.pool.Query(ctx, acquireSQL, f.c.Name, f.owner, secs, missing)
		if err != nil {
			return fmt.Errorf("%s acquire: %w", f.c.Name, err)
		}
		for rows.Next() {
			var p int
			var c Cursor
			var prev string
			if err := rows.Scan(&p, &c.XID, &c.Position, &prev); err != nil {
				rows.Close()
				return fmt.Errorf("%s acquire: %w", f.c.Name, err)
			}
			owned[p] = c
			if prev != "" && prev != f.owner {
				f.s.consumerMetrics.takeover(f.c.Name)
				f.log.Info("consumer took over a partition whose lease expired", "partition", p, "from", prev)
			}
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("%s acquire: %w", f.c.Name, err)
		}
	}
	f.s.consumerMetrics.owned(f.c.Name, len(owned)-len(f.owned))
	f.owned = owned
	return nil
}

// step reads the tail once after the oldest checkpoint this process owns
// and applies, in one transaction, each owned partition's events after its
// own checkpoint; the transaction moves every owned partition that was
// behind the read's end to it, fenced by its lease.
func (f *follower) step(ctx context.Context) (int, error) {
	changed := f.s.Changed()
	from := Cursor{}
	first := true
	for _, c := range f.owned {
		if first || c.Less(from) {
			from, first = c, false
		}
	}
	batch, next, _, err := f.s.ReadTail(ctx, from, f.c.BatchSize, f.c.Filter)
	if err != nil {
		return 0, err
	}
	var moving []int
	var fromXIDs []string
	var fromPositions []int64
	for _, p := range sortedKeys(f.owned) {
		if c := f.owned[p]; c.Less(next) {
			moving = append(moving, p)
			fromXIDs, fromPositions = append(fromXIDs, xidText(c)), append(fromPositions, c.Position)
		}
	}
	repartition := f.n != f.want && len(f.owned) == f.n
	if len(moving) == 0 && repartition && allAt(f.owned, next) {
		// An idle tail, and every partition at its end already.
		for _, p := range sortedKeys(f.owned) {
			moving = append(moving, p)
			fromXIDs, fromPositions = append(fromXIDs, xidText(next)), append(fromPositions, next.Position)
		}
	}
	if len(moving) == 0 {
		f.wait(ctx, changed)
		return 0, nil
	}
	repartition = repartition && len(moving) == f.n
	mine := batch[:0:0]
	for _, e := range batch {
		c, ok := f.owned[f.c.partitionOf(e, f.n)]
		if ok && c.Less(e.Cursor()) {
			mine = append(mine, e)
		}
	}
	err = f.s.InTx(ctx, func(tx *Tx) error {
		if len(mine) > 0 {
			if err := f.c.Handle(ctx, tx, mine); err != nil {
				return err
			}
		}
		tag, err := tx.Exec(ctx, saveFencedSQL, f.c.Name, f.owner, xidText(next), next.Position,
			moving, fromXIDs, fromPositions)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != int64(len(moving)) {
			return ErrCheckpointMoved
		}
		if repartition {
			return f.repartition(ctx, tx, next)
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", f.c.Name, err)
	}
	for _, p := range moving {
		f.owned[p] = next
	}
	if repartition {
		f.log.Info("consumer repartitioned", "from", f.n, "to", f.want)
		f.s.consumerMetrics.owned(f.c.Name, -len(f.owned))
		f.n, f.owned, f.nextRound = f.want, nil, time.Time{}
	}
	if len(mine) > 0 && f.c.Committed != nil {
		f.c.Committed(mine)
	}
	return len(mine), nil
}

// repartition replaces the consumer's partitions, all of them owned by
// this process and all at cursor (checked by the fenced save just before),
// by the configured number of them at the same cursor, unowned.
func (f *follower) repartition(ctx context.Context, tx *Tx, at Cursor) error {
	if _, err := tx.Exec(ctx, `DELETE FROM consumer_partitions WHERE consumer = $1`, f.c.Name); err != nil {
		return err
	}
	_, err := tx.Exec(ctx, `INSERT INTO consumer_partitions (consumer, partition, partitions, xid, position)
SELECT $1, p, $2, $3::text::xid8, $4 FROM generate_series(0, $2::int - 1) AS p`, f.c.Name, f.want, xidText(at), at.Position)
	return err
}

// wait blocks until an append in this process (then lingers), the poll
// interval, or the next lease round, whichever comes first.
func (f *follower) wait(ctx context.Context, changed <-chan struct{}) {
	t := time.NewTimer(min(f.c.Poll, max(time.Until(f.nextRound), time.Millisecond)))
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-changed:
		Sleep(ctx, f.c.Linger)
	case <-t.C:
	}
}

// leave gives the partitions back at once (rather than at their expiry),
// so that the other processes take them over on their next round.
func (f *follower) leave() {
	if f.c.vanish {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := f.s.pool.Exec(ctx, leaveSQL, f.c.Name, f.owner); err != nil {
		f.log.Warn("consumer could not release its partitions; they move when their leases expire", "err", err)
	}
	f.s.consumerMetrics.owned(f.c.Name, -len(f.owned))
	f.owned = nil
}

func sortedKeys(m map[int]Cursor) []int {
	ps := make([]int, 0, len(m))
	for p := range m {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

func allAt(m map[int]Cursor, c Cursor) bool {
	for _, at := range m {
		if at != c {
			return false
		}
	}
	return true
}
