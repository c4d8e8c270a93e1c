package projections

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
)

// Status is where a projection stands against the store.
type Status struct {
	Name       string
	Checkpoint eventstore.Cursor
	// UpdatedAt is when the checkpoint last moved (zero: never ran).
	UpdatedAt time.Time
	// HeadPosition is the store's highest global position.
	HeadPosition int64
	// EventsBehind counts the events of the projection's types that are
	// committed past its checkpoint, up to MaxBehindCounted (Capped says
	// the real number is larger).
	EventsBehind int64
	Capped       bool
	// SecondsBehind is the age of the oldest of those events: how long an
	// append has been waiting to show in the read model. 0 when caught up.
	SecondsBehind float64
}

// MaxBehindCounted bounds the scan that counts a lagging projection's
// backlog, so that a status check stays cheap however far behind it is.
const MaxBehindCounted = 100_000

const (
	// checkpointSQL: the oldest partition's checkpoint (eventstore's
	// Checkpoint), or the single row of a consumer not yet partitioned.
	checkpointSQL = `SELECT xid, position, updated_at FROM (
  (SELECT 0 AS source, xid, position, updated_at FROM consumer_partitions WHERE consumer = $1 ORDER BY xid, position LIMIT 1)
  UNION ALL
  (SELECT 1, xid, position, updated_at FROM checkpoints WHERE name = $1)) AS c
ORDER BY source LIMIT 1`
	headSQL = `SELECT coalesce(max(global_position), 0) FROM events`
	// behindSQL walks the tail index from the checkpoint; in steady state
	// that is a handful of rows.
	behindSQL = `SELECT count(*), min(recorded_at) FROM (
    SELECT recorded_at FROM events
    WHERE (xid, global_position) > ($1::xid8, $2::bigint) AND type = ANY($3::text[])
    ORDER BY xid, global_position
    LIMIT $4) behind`
)

// Statuses reports every projection's position and lag.
func Statuses(ctx context.Context, q eventstore.Querier, now time.Time) ([]Status, error) {
	return statusesOf(ctx, q, All(), now)
}

func statusesOf(ctx context.Context, q eventstore.Querier, ps []Projection, now time.Time) ([]Status, error) {
	var head int64
	if err := queryRow(ctx, q, headSQL).Scan(&head); err != nil {
		return nil, fmt.Errorf("store head: %w", err)
	}
	out := make([]Status, 0, len(ps))
	for _, p := range ps {
		s := Status{Name: p.Name, HeadPosition: head}
		err := queryRow(ctx, q, checkpointSQL, p.Checkpoint()).Scan(&s.Checkpoint.XID, &s.Checkpoint.Position, &s.UpdatedAt)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("checkpoint of %s: %w", p.Name, err)
		}
		var oldest *time.Time
		if err := queryRow(ctx, q, behindSQL, s.Checkpoint.XID, s.Checkpoint.Position, p.Types, MaxBehindCounted).
			Scan(&s.EventsBehind, &oldest); err != nil {
			return nil, fmt.Errorf("lag of %s: %w", p.Name, err)
		}
		s.Capped = s.EventsBehind >= MaxBehindCounted
		if oldest != nil {
			s.SecondsBehind = max(now.Sub(*oldest).Seconds(), 0)
		}
		out = append(out, s)
	}
	return out, nil
}

// queryRow runs a one-row query through a Querier (which has no QueryRow).
func queryRow(ctx context.Context, q eventstore.Querier, sql string, args ...any) pgx.Row {
	rows, err := q.Query(ctx, sql, args...)
	return &oneRow{rows: rows, err: err}
}

type oneRow struct {
	rows pgx.Rows
	err  error
}

func (r *oneRow) Scan(dest ...any) error {
	if r.err != nil {
		return r.err
	}
	defer r.rows.Close()
	if !r.rows.Next() {
		if err := r.rows.Err(); err != nil {
			return err
		}
		return pgx.ErrNoRows
	}
	if err := r.rows.Scan(dest...); err != nil {
		return err
	}
	r.rows.Close()
	return r.rows.Err()
}
