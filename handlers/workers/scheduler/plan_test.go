package scheduler

import (
	"context"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// TestRoundsDoNotScanScheduledRows fills message_schedule with
// AFTEROK_PLAN_ROWS (default 1,000,000) messages scheduled for the weeks
// ahead and 600 that are due, and requires each round's query to read only
// what is due: the queuer's and the expirer's from the low end of their
// index (a scheduled row is neither due nor expiring), the stranded check's
// from its partial index, which holds no scheduled row at all. Scheduled
// messages therefore cost a round nothing, however many wait. The plans
// are printed with -v; docs/architecture.md quotes one.
// fillChunk is how many rows one statement of a fill writes.
const fillChunk = 50_000

func TestRoundsDoNotScanScheduledRows(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a table with a million rows")
	}
	rows := 1_000_000
	if v := os.Getenv("AFTEROK_PLAN_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		rows = n
	}
	ctx := context.Background()
	db := storetest.NewDB(t)
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, s := range []string{`SET statement_timeout = 0`, `SET synchronous_commit = off`} {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err)
	}
	start := time.Now()
	// Scheduled: due from a day to 35 days ahead, valid 48 h after that.
	// Written 50,000 rows a statement: one statement of a million would be
	// one transaction holding the whole server's xmin horizon, and with it
	// every other test database's tail, for as long as it runs.
	for lo := 1; lo <= rows; lo += fillChunk {
		_, err = conn.Exec(ctx, `INSERT INTO message_schedule (message_id, account_id, attempt, due_at, expires_at,
    version, last_type, order_id)
SELECT 'S' || lpad(g::text, 10, '0'), 'acct', 1, d, d + interval '48 hours', 1, 'MessageAccepted', 'o' || (g / 1000)
FROM generate_series($2::int, $3::int) AS g,
    LATERAL (SELECT $1::timestamptz + interval '1 day' + (g % 34) * interval '1 day' + (g % 86400) * interval '1 second' AS d) AS v`,
			now, lo, min(lo+fillChunk-1, rows))
		require.NoError(t, err)
	}
	// Due: 600 accepted a moment ago.
	_, err = conn.Exec(ctx, `INSERT INTO message_schedule (message_id, account_id, attempt, due_at, expires_at,
    version, last_type, order_id)
SELECT 'D' || lpad(g::text, 10, '0'), 'acct', 1, $1::timestamptz - g * interval '1 ms', $1::timestamptz + interval '48 hours',
    1, 'MessageAccepted', 'o'
FROM generate_series(1, 600) AS g`, now)
	require.NoError(t, err)
	_, err = conn.Exec(ctx, `VACUUM ANALYZE message_schedule`)
	require.NoError(t, err)
	t.Logf("%d scheduled rows and 600 due ones written in %s", rows, time.Since(start).Round(time.Second))

	const batch = 500
	cases := []struct {
		name, sql, index string
		args             []any
		most             int // rows the index may yield: what is due or lapsed, never what waits
	}{
		{"queuer: the due rows", claimDueSQL, "message_schedule_due", []any{now, batch}, 600},
		{"expirer: the lapsed rows", claimExpiredSQL, "message_schedule_expiry", []any{now, batch}, 0},
		{"stranded check", claimStrandedSQL, "message_schedule_queued", []any{now, batch}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var plan string
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+c.sql,
					append([]any{pgx.QueryExecModeExec}, c.args...)...)
				if err != nil {
					return err
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				plan = strings.Join(lines, "\n")
				return err
			})
			require.NoError(t, err)
			t.Logf("%s\n%s", c.name, plan)
			require.NotContains(t, plan, "Seq Scan")
			// The planner may read the due rows in index order or gather
			// them through a bitmap and sort them: either way it touches only
			// those, and a sort of at most what is due is no scan.
			scanned := indexRows(t, plan, c.index)
			require.LessOrEqual(t, scanned, c.most, "the index yielded %d rows; at most %d are due", scanned, c.most)
			ms := executionMillis(t, plan)
			require.Less(t, ms, 100.0, "a round's query took %.1f ms", ms)
		})
	}
}

var indexScanRows = regexp.MustCompile(`Index Scan (?:using |on )(\S+)(?: on message_schedule)? \(actual time=\S+ rows=(\d+) loops=1\)`)

// indexRows is the actual row count of the plan's scan of index.
func indexRows(t *testing.T, plan, index string) int {
	t.Helper()
	for _, m := range indexScanRows.FindAllStringSubmatch(plan, -1) {
		if m[1] == index {
			n, _ := strconv.Atoi(m[2])
			return n
		}
	}
	t.Fatalf("no index scan of %s in\n%s", index, plan)
	return 0
}

var executionTime = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)

func executionMillis(t *testing.T, plan string) float64 {
	t.Helper()
	m := executionTime.FindStringSubmatch(plan)
	require.NotNil(t, m, plan)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}
