package callbacks

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// TestClaimPlanAt100kOwed owes 100,000 deliveries to one endpoint (20,000
// streams of 5, one ready each) and 50,000 to a second one the sender
// knows is full, and requires the claim to read the ready index only:
// no sequential scan of webhook_deliveries, nothing read of the full
// endpoint's rows, a claim in milliseconds. It prints the plan with -v.
func TestClaimPlanAt100kOwed(t *testing.T) {
	if testing.Short() {
		t.Skip("fills webhook_deliveries with 150,000 rows")
	}
	ctx := context.Background()
	db := storetest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
INSERT INTO webhook_endpoints (webhook_id, account_id, url, event_types, created_at, updated_at)
VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAA', 'acct', 'https://a', '{MessageDelivered}', now(), now()),
       ('BBBBBBBBBBBBBBBBBBBBBBBBBB', 'acct', 'https://b', '{MessageDelivered}', now(), now());
INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, ready, next_attempt_at)
SELECT 'AAAAAAAAAAAAAAAAAAAAAAAAAA', 'message-' || (i / 5), i, gen_random_uuid(), 'MessageDelivered', i % 5 = 0, now() - interval '1 s'
FROM generate_series(0, 99999) i;
INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, ready, next_attempt_at)
SELECT 'BBBBBBBBBBBBBBBBBBBBBBBBBB', 'message-' || i, i, gen_random_uuid(), 'MessageDelivered', true, now() - interval '1 s'
FROM generate_series(0, 49999) i;
ANALYZE webhook_deliveries; ANALYZE webhook_endpoints`)
	require.NoError(t, err)
	tx, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = tx.Rollback(ctx) }()
	start := time.Now()
	rows, err := tx.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+claimSQL, pgx.QueryExecModeExec, 500,
		[]string{"BBBBBBBBBBBBBBBBBBBBBBBBBB"}, []int32{0}, int64(120_000))
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	took := time.Since(start)
	plan := strings.Join(lines, "\n")
	t.Logf("claim of 500 at 150,000 owed, in %s:\n%s", took, plan)
	require.NotContains(t, plan, "Seq Scan on webhook_deliveries")
	require.Contains(t, plan, "webhook_deliveries_ready")
	require.Contains(t, plan, "rows=500 loops=1", "500 claimed")
	require.Less(t, took, 2*time.Second)
}
