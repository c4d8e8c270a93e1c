package eventstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestTenantTypeReadPlan shows the plans of GET /v1/events?type= (the
// tenant's tail with the types in the query) over 300,000 events, 90% of
// them one big account's: no page scans the table, and a page of a type
// the account has, or of a type rare everywhere, is read without
// discarding ten thousand rows. The worst case is logged, not asserted: a
// type common in the table that this account never has walks the
// account's tail to its end (the planner cannot know the two are
// uncorrelated; neither events_account_tail nor events_type_tail leads
// with both columns). An index on (account_id, type, xid,
// global_position) would bound it, at the cost of a seventh index entry on
// every append.
func TestTenantTypeReadPlan(t *testing.T) {
	if testing.Short() {
		t.Skip("fills 300,000 events")
	}
	ctx := context.Background()
	db := storetest.NewDB(t)
	start := time.Now()
	for batch := range 6 { // six transactions: six xids
		_, err := db.Pool.Exec(ctx, `INSERT INTO events (stream_id, stream_version, event_id, type, schema_version, account_id,
    data, metadata, recorded_at, prev_hash, hash)
SELECT 'message-' || g, 1, gen_random_uuid(),
    CASE WHEN g % 50 = 3 THEN 'OrderAccepted' WHEN g % 5 = 1 THEN 'MessageQueued' WHEN g % 20 = 0 THEN 'MessageRetried'
         WHEN g = 7 THEN 'BalanceCredited' ELSE 'MessageAccepted' END, 1,
    CASE WHEN g % 10 = 0 THEN 'acct-' || (g / 10 % 100) ELSE 'acct-big' END,
    '{}', '{}', now(), '', ''
FROM generate_series($1::int, $2::int) AS g`, batch*50_000, batch*50_000+49_999)
		require.NoError(t, err)
	}
	_, err := db.Pool.Exec(ctx, `VACUUM ANALYZE events`)
	require.NoError(t, err)
	t.Logf("300,000 events in %s", time.Since(start).Round(time.Second))

	for _, c := range []struct {
		name, account string
		types         []string
		common        bool // the account has many events of the types
	}{
		{"big account, a sparse type", "acct-big", []string{"OrderAccepted"}, true},
		{"big account, two types", "acct-big", []string{"OrderAccepted", "MessageQueued"}, true},
		{"small account, a sparse type", "acct-7", []string{"OrderAccepted"}, true},
		{"small account, a type only others have", "acct-7", []string{"BalanceCredited"}, true},
		{"big account, a type it has once", "acct-big", []string{"BalanceCredited"}, true},
		{"worst case: big account, a type common in others only", "acct-big", []string{"MessageRetried"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows, err := db.Pool.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+eventstore.TailAccountSQL,
				pgx.QueryExecModeExec, uint64(0), int64(0), 100, c.types, c.account, "")
			require.NoError(t, err)
			lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
			require.NoError(t, err)
			plan := strings.Join(lines, "\n")
			t.Logf("%s\n%s", c.name, plan)
			require.NotContains(t, plan, "Seq Scan on events")
			require.Contains(t, plan, "Index Scan", "no index serves the page")
			if c.common {
				require.NotRegexp(t, `Rows Removed by Filter: [0-9]{5,}`, plan, "a page of a common type read ten thousand rows or more to drop them")
			}
		})
	}
}
