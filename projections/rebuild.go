package projections

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/eventstore"
)

// Rebuild: build aside, then swap.
//
// A rebuild recomputes a projection's tables from position zero while the
// live projector keeps the current ones up to date and the API keeps
// reading them. It works in a schema of its own (afterok_rebuild_<name>):
// the tables are created there LIKE the live ones, and the rebuild runs
// the projection's own apply code on a connection whose search_path puts
// that schema first. The SQL is the live projector's, unchanged; only the
// tables it resolves to differ. (The events and checkpoints tables exist
// only in the live schema, so reads of the store still reach it.)
//
// When the aside tables have caught up with the tail, their secondary
// indexes are built (after the bulk load, which is much faster than
// maintaining them during it), and one transaction swaps them in:
//
//  1. it takes the projection's advisory lock exclusively. Every live batch
//     takes it shared first, so the swap waits for the batch in flight and
//     holds the next one;
//  2. it applies what was appended since, so the aside model is at a
//     cursor at least as far as the live one;
//  3. it drops the live tables and moves the aside ones into their place
//     (names, indexes and constraints are identical), and sets the live
//     checkpoint to the aside cursor.
//
// Readers wait for the few milliseconds of step 3 and then see the new
// tables; nobody sees a half-built model. The live projector's next batch
// finds its checkpoint moved, is rolled back (eventstore's
// ErrCheckpointMoved) and continues from the rebuilt model's cursor.

// ErrRebuildRunning is returned when another rebuild of the same
// projection holds its lock.
var ErrRebuildRunning = errors.New("a rebuild of this projection is already running")

// RebuildProgress is reported while a rebuild runs.
type RebuildProgress struct {
	Phase    string // build, index, swap, done
	Events   int64  // events applied to the aside tables so far
	Rate     float64
	Position int64 // global position reached
	Head     int64 // the store's head when the phase began
	Elapsed  time.Duration
}

// RebuildReport is what a finished rebuild did.
type RebuildReport struct {
	Events   int64
	Refused  int
	Cursor   eventstore.Cursor
	Duration time.Duration
	// SwapPause is how long the swap held the live projector (and, for its
	// last step, readers).
	SwapPause time.Duration
}

// RebuildBatch is how many events the rebuild applies per transaction.
const RebuildBatch = 5000

// RebuildHeadWait bounds how long a rebuild waits, before it swaps, for the
// tail to show every event committed before it began. The tail holds back
// events behind any open writing transaction; a rebuild that swapped without
// them would still be consistent (the live projector goes on from its
// checkpoint) but behind what its caller had already seen committed.
var RebuildHeadWait = 30 * time.Second

// coveredSQL: no event at or below the head the rebuild started from lies
// beyond its cursor in tail order.
const coveredSQL = `SELECT NOT EXISTS (SELECT 1 FROM events
WHERE (xid, global_position) > ($1::xid8, $2::bigint) AND global_position <= $3)`

const (
	currentSchemaSQL = `SELECT current_schema()`
	tryRebuildLock   = `SELECT pg_try_advisory_lock($1)`
	lockExclusiveSQL = `SELECT pg_advisory_xact_lock($1)`
	constraintsSQL   = `SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
WHERE conrelid = $1::regclass AND contype IN ('p', 'u', 'x') ORDER BY conname`
	indexesSQL = `SELECT i.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid
WHERE x.indrelid = $1::regclass AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
ORDER BY i.relname`
)

// Rebuild rebuilds the projection called name from position zero and swaps
// the result in. progress (optional) is called about once a second.
func Rebuild(ctx context.Context, pool *pgxpool.Pool, name string, progress func(RebuildProgress)) (RebuildReport, error) {
	p, err := Lookup(name)
	if err != nil {
		return RebuildReport{}, err
	}
	var live string
	if err := pool.QueryRow(ctx, currentSchemaSQL).Scan(&live); err != nil {
		return RebuildReport{}, err
	}
	rb := &rebuild{p: p, live: live, aside: "afterok_rebuild_" + p.Name, progress: progress, start: time.Now()}
	cfg := pool.Config().ConnConfig.Copy()
	cfg.RuntimeParams["search_path"] = pgx.Identifier{rb.aside}.Sanitize() + ", " + pgx.Identifier{live}.Sanitize()
	cfg.RuntimeParams["statement_timeout"] = "0" // index builds on millions of rows
	cfg.RuntimeParams["maintenance_work_mem"] = "256MB"
	cfg.RuntimeParams["application_name"] = "afterok rebuild " + p.Name
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return RebuildReport{}, fmt.Errorf("rebuild %s: connect: %w", p.Name, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rb.conn = conn
	return rb.run(ctx)
}

type rebuild struct {
	p           Projection
	live, aside string
	conn        *pgx.Conn
	progress    func(RebuildProgress)
	start       time.Time
	startHead   int64 // the highest position committed when the rebuild began
	lastReport  time.Time
	indexes     []string // CREATE INDEX statements for the aside tables
	cursor      eventstore.Cursor
	events      int64
	refused     int
}

func (rb *rebuild) run(ctx context.Context) (RebuildReport, error) {
	var ok bool
	if err := rb.conn.QueryRow(ctx, tryRebuildLock, rb.p.rebuildKey()).Scan(&ok); err != nil {
		return RebuildReport{}, err
	}
	if !ok {
		return RebuildReport{}, fmt.Errorf("%w: %s", ErrRebuildRunning, rb.p.Name)
	}
	if err := rb.conn.QueryRow(ctx, `SELECT coalesce(max(global_position), 0) FROM events`).Scan(&rb.startHead); err != nil {
		return RebuildReport{}, err
	}
	if err := rb.prepare(ctx); err != nil {
		return RebuildReport{}, fmt.Errorf("rebuild %s: prepare: %w", rb.p.Name, err)
	}
	if err := rb.catchUp(ctx, rb.conn, "build"); err != nil {
		return RebuildReport{}, fmt.Errorf("rebuild %s: %w", rb.p.Name, err)
	}
	rb.report(ctx, "index", true)
	for _, ddl := range rb.indexes {
		if _, err := rb.conn.Exec(ctx, ddl); err != nil {
			return RebuildReport{}, fmt.Errorf("rebuild %s: %s: %w", rb.p.Name, ddl, err)
		}
	}
	for _, t := range rb.p.Tables {
		if _, err := rb.conn.Exec(ctx, "ANALYZE "+rb.qualified(rb.aside, t)); err != nil {
			return RebuildReport{}, err
		}
	}
	// What arrived while the indexes were built, outside the lock, so the
	// swap itself has little left to do; and at least everything committed
	// before the rebuild began.
	if err := rb.reachStartHead(ctx); err != nil {
		return RebuildReport{}, fmt.Errorf("rebuild %s: %w", rb.p.Name, err)
	}
	rb.report(ctx, "swap", true)
	pause, err := rb.swap(ctx)
	if err != nil {
		return RebuildReport{}, fmt.Errorf("rebuild %s: swap: %w", rb.p.Name, err)
	}
	rb.report(ctx, "done", true)
	return RebuildReport{Events: rb.events, Refused: rb.refused, Cursor: rb.cursor,
		Duration: time.Since(rb.start), SwapPause: pause}, nil
}

func (rb *rebuild) qualified(schema, table string) string {
	return pgx.Identifier{schema, table}.Sanitize()
}

// prepare creates the aside schema with empty copies of the live tables:
// columns, defaults, checks and the primary keys (the projection's upserts
// need them); the secondary indexes wait until the load is done.
func (rb *rebuild) prepare(ctx context.Context) error {
	stmts := []string{
		"DROP SCHEMA IF EXISTS " + pgx.Identifier{rb.aside}.Sanitize() + " CASCADE",
		"CREATE SCHEMA " + pgx.Identifier{rb.aside}.Sanitize(),
	}
	for _, s := range stmts {
		if _, err := rb.conn.Exec(ctx, s); err != nil {
			return err
		}
	}
	for _, t := range rb.p.Tables {
		live, aside := rb.qualified(rb.live, t), rb.qualified(rb.aside, t)
		if _, err := rb.conn.Exec(ctx, "CREATE TABLE "+aside+" (LIKE "+live+" INCLUDING ALL EXCLUDING INDEXES)"); err != nil {
			return err
		}
		rows, err := rb.conn.Query(ctx, constraintsSQL, live)
		if err != nil {
			return err
		}
		cons, err := pgx.CollectRows(rows, scanPair)
		if err != nil {
			return err
		}
		for _, c := range cons {
			if _, err := rb.conn.Exec(ctx, "ALTER TABLE "+aside+" ADD CONSTRAINT "+pgx.Identifier{c[0]}.Sanitize()+" "+c[1]); err != nil {
				return err
			}
		}
		rows, err = rb.conn.Query(ctx, indexesSQL, live)
		if err != nil {
			return err
		}
		idx, err := pgx.CollectRows(rows, scanPair)
		if err != nil {
			return err
		}
		for _, ix := range idx {
			ddl, err := retarget(ix[1], aside)
			if err != nil {
				return err
			}
			rb.indexes = append(rb.indexes, ddl)
		}
	}
	return nil
}

// retarget points an index definition from pg_get_indexdef ("CREATE INDEX
// name ON table USING …") at another table of the same shape. The index
// keeps its name: index names are per schema.
func retarget(def, table string) (string, error) {
	on := strings.Index(def, " ON ")
	using := strings.Index(def, " USING ")
	if on < 0 || using < on {
		return "", fmt.Errorf("unexpected index definition %q", def)
	}
	return def[:on] + " ON " + table + def[using:], nil
}

// catchUp applies the tail to the aside tables, a batch per transaction on
// q (the connection, or the swap's transaction), until it is at the head.
func (rb *rebuild) catchUp(ctx context.Context, q interface {
	eventstore.Querier
	Begin(context.Context) (pgx.Tx, error)
}, phase string) error {
	for {
		batch, next, err := eventstore.ReadAll(ctx, q, rb.cursor, RebuildBatch, eventstore.Filter{Types: rb.p.Types, Sparse: rb.p.Sparse})
		if err != nil {
			return err
		}
		if len(batch) == 0 {
			if next == rb.cursor {
				return nil
			}
			rb.cursor = next
			continue
		}
		err = pgx.BeginFunc(ctx, q, func(tx pgx.Tx) error {
			res, err := rb.p.apply(ctx, tx, batch)
			rb.refused += len(res.refused)
			return err
		})
		if err != nil {
			return err
		}
		rb.cursor = next
		rb.events += int64(len(batch))
		rb.report(ctx, phase, false)
	}
}

// reachStartHead catches up until the cursor covers every event committed
// when the rebuild began, waiting up to RebuildHeadWait for the tail's
// horizon to pass them; after that it goes on with what it has.
func (rb *rebuild) reachStartHead(ctx context.Context) error {
	deadline := time.Now().Add(RebuildHeadWait)
	for {
		if err := rb.catchUp(ctx, rb.conn, "build"); err != nil {
			return err
		}
		var covered bool
		if err := rb.conn.QueryRow(ctx, coveredSQL, rb.cursor.XID, rb.cursor.Position, rb.startHead).Scan(&covered); err != nil {
			return err
		}
		if covered || time.Now().After(deadline) {
			return nil
		}
		eventstore.Sleep(ctx, 20*time.Millisecond)
		if err := ctx.Err(); err != nil {
			return err
		}
	}
}

// swap moves the aside tables into the live schema; see the comment at
// the top of this file. A reader holding the live tables past the lock
// timeout makes the swap fail and it is tried again.
func (rb *rebuild) swap(ctx context.Context) (time.Duration, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var start time.Time
		err = pgx.BeginFunc(ctx, rb.conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `SET LOCAL lock_timeout = '10s'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, lockExclusiveSQL, rb.p.lockKey()); err != nil {
				return err
			}
			start = time.Now()
			if err := rb.catchUp(ctx, tx, "swap"); err != nil {
				return err
			}
			for _, t := range rb.p.Tables {
				if _, err := tx.Exec(ctx, "DROP TABLE "+rb.qualified(rb.live, t)); err != nil {
					return err
				}
				if _, err := tx.Exec(ctx, "ALTER TABLE "+rb.qualified(rb.aside, t)+" SET SCHEMA "+pgx.Identifier{rb.live}.Sanitize()); err != nil {
					return err
				}
			}
			if err := eventstore.ForceCheckpoint(ctx, tx, rb.p.Checkpoint(), rb.cursor); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP SCHEMA "+pgx.Identifier{rb.aside}.Sanitize())
			return err
		})
		if err == nil {
			return time.Since(start), nil
		}
		if ctx.Err() != nil {
			break
		}
	}
	return 0, err
}

func (rb *rebuild) report(ctx context.Context, phase string, force bool) {
	if rb.progress == nil || (!force && time.Since(rb.lastReport) < time.Second) {
		return
	}
	rb.lastReport = time.Now()
	var head int64
	_ = rb.conn.QueryRow(ctx, headSQL).Scan(&head)
	el := time.Since(rb.start)
	rb.progress(RebuildProgress{Phase: phase, Events: rb.events, Rate: float64(rb.events) / max(el.Seconds(), 1e-9),
		Position: rb.cursor.Position, Head: head, Elapsed: el})
}

func scanPair(r pgx.CollectableRow) ([2]string, error) {
	var p [2]string
	return p, r.Scan(&p[0], &p[1])
}
