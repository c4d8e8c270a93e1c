package eventstore

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Table is one table that Maintain looks after.
type Table struct {
	Name string
	// Every is how often it is vacuumed and analysed.
	Every time.Duration
	// AnalyzeOnly skips VACUUM (for append-only tables, where vacuuming
	// mostly rewrites the visibility map and is done less often).
	AnalyzeOnly bool
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
	for {
		now := time.Now()
		for i, t := range tables {
			if now.Sub(last[i]) < t.Every {
				continue
			}
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
	_, err = conn.Exec(ctx, stmt+pgx.Identifier{t.Name}.Sanitize(), pgx.QueryExecModeSimpleProtocol)
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
	{Name: "events", Every: time.Minute, AnalyzeOnly: true},
	{Name: "events", Every: 10 * time.Minute},
}
