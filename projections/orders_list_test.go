package projections

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestOrderListingUsesItsIndexes fills read_orders with a synthetic
// population (AFTEROK_PLAN_ORDERS rows, default 500,000: 10,000,000
// messages at 20 an order), one account holding 80% of it, and requires
// every query GET /v1/orders runs to read its page from an index in the
// listing's order: no sequential scan, no sort, no more index rows than
// the page, and a page in milliseconds. It prints the plans with -v.
func TestOrderListingUsesItsIndexes(t *testing.T) {
	if testing.Short() {
		t.Skip("fills a table with hundreds of thousands of rows")
	}
	n := 500_000
	if v := os.Getenv("AFTEROK_PLAN_ORDERS"); v != "" {
		var err error
		n, err = strconv.Atoi(v)
		require.NoError(t, err)
	}
	ctx := context.Background()
	db := storetest.NewDB(t)
	conn, err := db.Pool.Acquire(ctx)
	require.NoError(t, err)
	defer conn.Release()
	for _, s := range []string{`SET statement_timeout = 0`, `SET synchronous_commit = off`} {
		_, err := conn.Exec(ctx, s)
		require.NoError(t, err)
	}
	start := time.Now()
	// An order a minute; one in five of one of 1,000 small accounts, the
	// rest of one big account. 97% completed, 2% executing (a message
	// queued), 1% accepted (nothing moved yet), the newest ones included.
	// 50,000 rows a statement, each its own short transaction: one
	// statement would hold the server's xmin horizon (and every other test
	// database's tail) for its whole run.
	for lo := 1; lo <= n; lo += 50_000 {
		_, err = conn.Exec(ctx, `INSERT INTO read_orders (`+orderColumns+`)
SELECT 'O' || lpad(g::text, 25, '0'),
    CASE WHEN g % 5 = 0 THEN 'acct-' || (g / 5 % 1000) ELSE 'acct-big' END,
    20, 1500000, 'EUR', 172800, at + interval '48 hours', at, CASE WHEN s <> 'accepted' THEN at END,
    CASE WHEN s = 'completed' THEN at + interval '1 minute' END,
    CASE WHEN s = 'accepted' THEN 20 ELSE 0 END, CASE WHEN s = 'executing' THEN 1 ELSE 0 END, 0, 0,
    CASE WHEN s = 'completed' THEN 19 WHEN s = 'executing' THEN 19 ELSE 0 END, CASE WHEN s = 'completed' THEN 1 ELSE 0 END, 0,
    0, 0, 2, NULL, NULL, 0, 0
FROM generate_series($1::int, $2::int) AS g,
    LATERAL (SELECT timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' AS at,
        CASE WHEN g % 100 < 97 THEN 'completed' WHEN g % 100 < 99 THEN 'executing' ELSE 'accepted' END AS s) AS v`, lo, min(lo+50_000-1, n))
		require.NoError(t, err)
	}
	_, err = conn.Exec(ctx, `VACUUM ANALYZE read_orders`)
	require.NoError(t, err)
	t.Logf("%d orders written and indexed in %s", n, time.Since(start).Round(time.Second))

	big, small := "acct-big", "acct-7"
	mid := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n/2) * time.Minute)
	midID := fmt.Sprintf("O%025d", n/2)
	var none *string
	var noTime *time.Time
	str := func(s string) *string { return &s }
	ts := func(t time.Time) *time.Time { return &t }
	const limit = 50
	cases := []struct {
		name, index string
		args        []any
	}{
		{"first page", "read_orders_account", []any{big, none, noTime, noTime, noTime, none, limit + 1}},
		{"deep page (cursor)", "read_orders_account", []any{big, none, noTime, noTime, ts(mid), str(midID), limit + 1}},
		{"since/until", "read_orders_account", []any{big, none, ts(mid.Add(-24 * time.Hour)), ts(mid), noTime, none, limit + 1}},
		{"a small account", "read_orders_account", []any{small, none, noTime, noTime, noTime, none, limit + 1}},
		{"executing", "read_orders_account_state", []any{big, str("executing"), noTime, noTime, noTime, none, limit + 1}},
		{"accepted, deep page", "read_orders_account_state", []any{big, str("accepted"), noTime, noTime, ts(mid), str(midID), limit + 1}},
		{"completed (the bulk)", "read_orders_account", []any{big, str("completed"), noTime, noTime, noTime, none, limit + 1}},
		{"executing, since/until", "read_orders_account_state", []any{big, str("executing"), ts(mid.Add(-30 * 24 * time.Hour)), ts(mid), noTime, none, limit + 1}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			plan := explain(t, ctx, conn, listOrdersSQL, c.args...)
			t.Logf("%s\n%s", c.name, plan)
			require.NotContains(t, plan, "Seq Scan")
			require.NotRegexp(t, `(?m)^\s*(->\s+)?Sort `, plan, "the rows are sorted instead of read in index order")
			require.Regexp(t, `Index Scan (Backward )?using `+c.index+` on read_orders`, plan, "another index (or none) answers this query")
			require.NotContains(t, plan, " rows=0 loops", "the case finds nothing: it proves nothing")
			// The index hands over the page and little more: a filter on
			// the bulk state may skip the few rows of other states.
			scanned := orderIndexRows(t, plan)
			require.LessOrEqual(t, scanned, 2*(limit+1), "the index yielded %d rows for a page of %d", scanned, limit+1)
			ms := executionMillis(t, plan)
			require.Less(t, ms, 100.0, "a page took %.1f ms", ms)
		})
	}
}

var (
	orderScanRows   = regexp.MustCompile(`Index Scan (?:Backward )?using \S+ on read_orders \(actual time=\S+ rows=(\d+) loops=1\)`)
	removedByFilter = regexp.MustCompile(`Rows Removed by Filter: (\d+)`)
)

// orderIndexRows is what the plan's index scan on read_orders handed up
// (its actual rows), plus what its filter removed.
func orderIndexRows(t *testing.T, plan string) int {
	t.Helper()
	m := orderScanRows.FindStringSubmatch(plan)
	require.NotNil(t, m, plan)
	n, err := strconv.Atoi(m[1])
	require.NoError(t, err)
	if r := removedByFilter.FindStringSubmatch(plan); r != nil {
		k, err := strconv.Atoi(r[1])
		require.NoError(t, err)
		n += k
	}
	return n
}

// TestOrderStateColumnAgreesWithState: the generated state column the
// listing filters on (migration 0020) says what Order.State says, for
// every way an order's counts can stand.
func TestOrderStateColumnAgreesWithState(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	var os []*Order
	add := func(name string, c Counts, completed bool) {
		o := &Order{ID: name, AccountID: "a", MessageCount: 1, AcceptedAt: at, Counts: c, Version: 1,
			Price: domain.Money{Currency: "EUR"}}
		if completed {
			o.CompletedAt = at.Add(time.Minute)
		}
		os = append(os, o)
	}
	add("new", Counts{Accepted: 1}, false)
	add("scheduled", Counts{Scheduled: 1}, false)
	for _, c := range []Counts{{Queued: 1}, {Routed: 1}, {Submitted: 1}, {Delivered: 1}, {Failed: 1, Expired: 1}, {Canceled: 1}} {
		add(fmt.Sprintf("moving-%+v", c), c, false)
		add(fmt.Sprintf("done-%+v", c), c, true)
	}
	_, err := db.Pool.Exec(ctx, upsertOrdersSQL, orderArrays(os)...)
	require.NoError(t, err)
	for _, o := range os {
		var state string
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT state FROM read_orders WHERE order_id = $1`, o.ID).Scan(&state))
		require.Equal(t, string(o.State()), state, o.ID)
	}
	// And the listing's filter finds them by it.
	for _, st := range OrderStates() {
		p, err := ListOrders(ctx, db.Pool, "a", OrderList{State: st, Limit: 100})
		require.NoError(t, err)
		require.NotEmpty(t, p.Orders, st)
		for _, o := range p.Orders {
			require.Equal(t, st, string(o.State()))
		}
	}
}
