package eventstore

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Table is one table that Maintain looks after.
type Table struct {
	Name string
	// Every is how often it is vacuumed and analysed at least; sooner
	// when it has changed a lot (see grownSQL).
	Every time.Duration
	// AnalyzeOnly skips VACUUM (for append-only tables, where vacuuming
	// mostly rewrites the visibility map and is done less often).
	AnalyzeOnly bool
	// Columns, if set, are the only columns analysed: the ones queries
	// filter, join and sort on. Sampling a table's large columns (event
	// data and metadata, detoasted row by row) is most of an ANALYZE's
	// cost and informs no plan.
	Columns []string
}

const maintainLockKey = 7_301_202_612 // one maintainer per database at a time

// Maintain vacuums and analyses hot tables itself when the server's
// autovacuum is off, and does nothing otherwise. With autovacuum off,
// tables that are updated or deleted from on every message (streams,
// message_schedule, the read models) fill with dead rows, and the planner's
// statistics go stale while a table grows a thousandfold, which turns
// index probes into full scans. One process at a time does it (an advisory
// lock), so every process may run Maintain.
func Maintain(ctx context.Context, pool *pgxpool.Pool, tables []Table, log *slog.Logger) error {
	var autovacuum string
	if err := pool.QueryRow(ctx, `SHOW autovacuum`).Scan(&autovacuum); err != nil {
		return err
	}
	if autovacuum == "on" {
		log.Debug("autovacuum is on; table maintenance left to the server")
		<-ctx.Done()
		return nil
	}
	log.Warn("autovacuum is off on this PostgreSQL server; afterok vacuums and analyses its hot tables itself")
	last := make([]time.Time, len(tables))
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	names := make([]string, len(tables))
	for i, t := range tables {
		names[i] = t.Name
	}
	for {
		now := time.Now()
		grown, err := grownTables(ctx, pool, names)
		if err != nil && ctx.Err() == nil {
			log.Warn("table maintenance: reading the tables' statistics failed", "err", err)
		}
		done := map[string]bool{} // a table changed a lot is done once a tick, by its first entry
		for i, t := range tables {
			due := now.Sub(last[i]) >= t.Every
			if !due && (done[t.Name] || !grown[t.Name].needs(t)) {
				continue
			}
			done[t.Name] = true
			if err := maintainOne(ctx, pool, t); err != nil && ctx.Err() == nil {
				log.Warn("table maintenance failed", "table", t.Name, "err", err)
			}
			last[i] = now
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// grownSQL reads, per table, how many rows changed since its last
// analysis, how many dead rows it holds, and how many rows it had then.
// It is what autovacuum's thresholds read: a table that grows a
// thousandfold between two scheduled analyses (the events table of a new
// deployment, in its first minute) keeps the planner's statistics of its
// empty self, and the generic plans the statements cached meanwhile scan
// it whole (measured: the tail's read took 40-170 ms on a 15,000-event
// table, a sequential scan planned for one row, until the next analysis).
const grownSQL = `SELECT c.relname, s.n_mod_since_analyze, s.n_dead_tup, greatest(c.reltuples, 0)::bigint
FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.relname = ANY($1) AND c.relnamespace = to_regnamespace(current_schema())`

// growth is what grownSQL says of one table.
type growth struct{ modified, dead, rows int64 }

// needs says whether t is due now by its changes: like autovacuum's
// defaults (a fifth of the table changed), with a floor of 1,000 rows.
// While something holds the horizon, a vacuum cannot remove the dead
// rows that made it due, and runs again on the next tick (5 s): bounded,
// and measured to pay (at 600 messages/s with callbacks, vacuuming the
// hot tables only on their schedule made callback lag p99 3.5-3.7 s
// instead of 0.6-1.7 s).
func (g growth) needs(t Table) bool {
	threshold := 1000 + g.rows/5
	if t.AnalyzeOnly {
		return g.modified > threshold
	}
	return g.dead > threshold || g.modified > threshold
}

func grownTables(ctx context.Context, pool *pgxpool.Pool, names []string) (map[string]growth, error) {
	rows, err := pool.Query(ctx, grownSQL, names)
	if err != nil {
		return nil, err
	}
	out := map[string]growth{}
	for rows.Next() {
		var name string
		var g growth
		if err := rows.Scan(&name, &g.modified, &g.dead, &g.rows); err != nil {
			rows.Close()
			return nil, err
		}
		out[name] = g
	}
	return out, rows.Err()
}

func maintainOne(ctx context.Context, pool *pgxpool.Pool, t Table) error {
	conn, err := pool.Acquire(ctx)
	if err != nil {
		return err
	}
	defer conn.Release()
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock($1)`, maintainLockKey).Scan(&got); err != nil || !got {
		return err
	}
	defer func() { _, _ = conn.Exec(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, maintainLockKey) }()
	stmt := "VACUUM (ANALYZE) "
	if t.AnalyzeOnly {
		stmt = "ANALYZE "
	}
	// VACUUM cannot run in a transaction; the simple protocol sends it alone.
	stmt += pgx.Identifier{t.Name}.Sanitize()
	if len(t.Columns) > 0 {
		cols := make([]string, len(t.Columns))
		for i, c := range t.Columns {
			cols[i] = pgx.Identifier{c}.Sanitize()
		}
		stmt += " (" + strings.Join(cols, ", ") + ")"
	}
	_, err = conn.Exec(ctx, stmt, pgx.QueryExecModeSimpleProtocol)
	return err
}

// MaintainedTables are the store's own tables that Maintain should look
// after: the stream heads and consumer checkpoints are updated on every
// append, and the events table only grows, so it is analysed often and
// vacuumed rarely.
var MaintainedTables = []Table{
	{Name: "streams", Every: 30 * time.Second},
	{Name: "checkpoints", Every: 15 * time.Second},
	// A partition's row is rewritten by every batch, a member's by every
	// lease round.
	{Name: "consumer_partitions", Every: 15 * time.Second},
	{Name: "consumer_members", Every: time.Minute},
	{Name: "events", Every: time.Minute, AnalyzeOnly: true, Columns: eventColumnsPlanned},
	{Name: "events", Every: 10 * time.Minute, Columns: eventColumnsPlanned},
}

// eventColumnsPlanned are the events columns that queries filter, join or
// sort on (its indexes are on plain columns of these, none on an
// expression, so their statistics need no whole-table ANALYZE): measured,
// ANALYZE events took about 1 s at 300,000 events with every column,
// 6.8% of PostgreSQL's statement time in an end-to-end run.
var eventColumnsPlanned = []string{"stream_id", "stream_version", "xid", "global_position", "type", "account_id",
	"event_id", "recorded_at"}
