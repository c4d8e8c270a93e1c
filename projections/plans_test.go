package projections

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// TestReadQueriesUseTheirIndexes fills read_messages with a synthetic
// population (AFTEROK_PLAN_ROWS rows, default 300,000; docs/read-side.md
// shows a 10,000,000-row run), one account holding 80% of it, and requires
// every read query the API runs to be answered by its index: no sequential
// scan, no sort of the matching rows, a page in milliseconds. It prints the
// plans with -v.
func TestReadQueriesUseTheirIndexes(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a table with hundreds of thousands of rows")
	}
	rows := 300_000
	if v := os.Getenv("AFTEROK_PLAN_ROWS"); v != "" {
		n, err := strconv.Atoi(v)
		require.NoError(t, err)
		rows = n
	}
	ctx := context.Background()
	db := storetest.NewDB(t)
	start := time.Now()
	fillMessages(t, ctx, db.Pool, rows)
	t.Logf("%d rows generated and indexed in %s", rows, time.Since(start).Round(time.Second))

	big, small := "acct-big", "acct-7"
	g := (rows/2000)*1000 + 1000 + 17 // a message of the big account (its order is not a multiple of 5), mid-history
	order := fmt.Sprintf("ord-%08d", g/1000)
	mid := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(g/1000) * 4 * time.Minute)
	cursorAt, cursorID := mid, fmt.Sprintf("M%025x", g)
	to := "+4915100012345"
	var none *string
	var noTime *time.Time
	str := func(s string) *string { return &s }
	ts := func(t time.Time) *time.Time { return &t }
	cases := []struct {
		name  string
		sql   string
		args  []any
		index string
	}{
		{"search: the big account, first page", searchMessagesSQL, []any{big, none, none, noTime, noTime, noTime, none, 51, none}, "read_messages_account"},
		{"search: the big account, deep page (cursor)", searchMessagesSQL, []any{big, none, none, noTime, noTime, ts(cursorAt), str(cursorID), 51, none}, "read_messages_account"},
		{"search: the big account, since/until", searchMessagesSQL, []any{big, none, none, ts(mid.Add(-time.Hour)), ts(mid), noTime, none, 51, none}, "read_messages_account"},
		{"search: by number", searchMessagesSQL, []any{big, str(to), none, noTime, noTime, noTime, none, 51, none}, "read_messages_to"},
		{"search: failed messages", searchMessagesSQL, []any{big, none, str("failed"), noTime, noTime, noTime, none, 51, none}, "read_messages_state"},
		{"search: queued messages (rare)", searchMessagesSQL, []any{big, none, str("queued"), noTime, noTime, noTime, none, 51, none}, "read_messages_state"},
		{"search: delivered messages (the bulk)", searchMessagesSQL, []any{big, none, str("delivered"), noTime, noTime, noTime, none, 51, none}, "read_messages_account"},
		{"search: a small account", searchMessagesSQL, []any{small, none, none, noTime, noTime, noTime, none, 51, none}, "read_messages_account"},
		{"search: within an order", searchOrderMessagesSQL, []any{order, big, none, none, noTime, noTime, -1, 51, none}, "read_messages_order"},
		{"order messages: page 3", orderMessagesSQL, []any{order, none, 100, false, big, 51, none}, "read_messages_order"},
		{"order messages: failed only", orderMessagesSQL, []any{order, str("failed"), -1, false, big, 51, none}, "read_messages_order_state"},
		{"message by id", getMessageSQL, []any{cursorID, false, big}, "read_messages_pkey"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := explain(t, ctx, db.Pool, c.sql, c.args...)
			t.Logf("%s\n%s", c.name, plan)
			require.NotContains(t, plan, "Seq Scan on read_messages")
			require.NotRegexp(t, `(?m)^\s*(->\s+)?Sort `, plan, "the rows are sorted instead of read in index order")
			require.Contains(t, plan, " using "+c.index+" on read_messages", "another index (or none) answers this query")
			require.NotContains(t, plan, " rows=0 loops", "the case finds nothing: it proves nothing")
			ms := executionMillis(t, plan)
			require.Less(t, ms, 250.0, "a page took %.1f ms", ms)
		})
	}
}

// explain runs EXPLAIN ANALYZE with the same one-off, custom plan the API
// gets (QueryExecModeExec): absent filters fold away before planning.
func explain(t *testing.T, ctx context.Context, q interface {
	Query(context.Context, string, ...any) (pgx.Rows, error)
}, sql string, args ...any) string {
	t.Helper()
	rows, err := q.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "+sql, append([]any{pgx.QueryExecModeExec}, args...)...)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	return strings.Join(lines, "\n")
}

var executionTime = regexp.MustCompile(`Execution Time: ([0-9.]+) ms`)

func executionMillis(t *testing.T, plan string) float64 {
	m := executionTime.FindStringSubmatch(plan)
	require.NotNil(t, m, plan)
	v, err := strconv.ParseFloat(m[1], 64)
	require.NoError(t, err)
	return v
}

// fillMessages generates n read_messages rows: orders of 1,000 messages,
// four minutes apart; one order in five belongs to one of 1,000 small
// accounts, the rest to one big account; 95% delivered, 3% failed, 1%
// submitted, 1% queued; destinations spread over a million numbers. The
// indexes are dropped for the load and rebuilt from their own definitions.
func fillMessages(t *testing.T, ctx context.Context, pool *pgxpool.Pool, n int) {
	t.Helper()
	rows, err := pool.Query(ctx, `SELECT indexname, indexdef FROM pg_indexes
WHERE tablename = 'read_messages' AND indexname <> 'read_messages_pkey'`)
	require.NoError(t, err)
	defs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([2]string, error) {
		var d [2]string
		return d, r.Scan(&d[0], &d[1])
	})
	require.NoError(t, err)
	for _, d := range defs {
		_, err := pool.Exec(ctx, "DROP INDEX "+pgx.Identifier{d[0]}.Sanitize())
		require.NoError(t, err)
	}
	conn, err := pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, s := range []string{`SET statement_timeout = 0`, `SET maintenance_work_mem = '512MB'`, `SET synchronous_commit = off`} {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err)
	}
	const chunk = 1_000_000
	for from := 1; from <= n; from += chunk {
		_, err := conn.Exec(ctx, fillSQL, from, min(from+chunk-1, n))
		require.NoError(t, err)
	}
	for _, d := range defs {
		_, err := conn.Exec(ctx, d[1])
		require.NoError(t, err)
	}
	_, err = conn.Exec(ctx, `VACUUM ANALYZE read_messages`)
	require.NoError(t, err)
}

const fillSQL = `INSERT INTO read_messages (` + messageColumns + `)
SELECT 'M' || lpad(to_hex(g), 25, '0'),
    CASE WHEN o % 5 = 0 THEN 'acct-' || (o / 5 % 1000) ELSE 'acct-big' END,
    'ord-' || lpad(o::text, 8, '0'), g % 1000,
    '+49151' || lpad(((g::bigint * 7919) % 1000000)::text, 8, '0'), 'DE', '', 'gsm7', 1, 75000, 'EUR',
    s, 1, s, 1, 0, NULL, 'de', 'sim-a', 'priority', 'p-' || g,
    CASE WHEN s = 'failed' THEN '{"code":"undeliverable","stage":"delivery","reason":"","permanent":true}'::jsonb END,
    at, at, at, at, CASE WHEN s = 'delivered' THEN at END, CASE WHEN s = 'failed' THEN at END, NULL,
    at + interval '1 day', 5, 'Hello', NULL, NULL, NULL, NULL
FROM generate_series($1::int, $2::int) AS g,
    LATERAL (SELECT g / 1000 AS o) AS ord,
    LATERAL (SELECT timestamptz '2026-01-01 00:00:00+00' + (g / 1000) * interval '4 minutes' AS at,
        CASE WHEN g % 100 < 95 THEN 'delivered' WHEN g % 100 < 98 THEN 'failed' WHEN g % 100 = 98 THEN 'submitted' ELSE 'queued' END AS s) AS v`
