package callbacks

import (
	"context"
	"regexp"
	"strconv"
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

// TestMatchPlanOfABurstBatch: the fan-out's match of a 2,000-event batch
// (one endpoint, 2,000 streams, 20,000 deliveries owed to it on other
// streams) probes the deliveries index once per match, not once per
// match and pair: an earlier form of the query, planned for one row,
// made 4,000,000 probes and took 1.2-2.2 s per batch, which capped the
// callbacks at ~1,300/s in the burst benchmark. It prints the plan
// with -v.
func TestMatchPlanOfABurstBatch(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
INSERT INTO webhook_endpoints (webhook_id, account_id, url, event_types, created_at, updated_at)
VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAA', 'acct', 'https://a', '{MessageQueued}', now() - interval '1 h', now());
INSERT INTO webhook_secrets (webhook_id, secret) VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAA', 'whsec_x');
INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, ready, next_attempt_at)
SELECT 'AAAAAAAAAAAAAAAAAAAAAAAAAA', 'message-old-' || i, i, gen_random_uuid(), 'MessageQueued', true, now()
FROM generate_series(0, 19999) i;
ANALYZE webhook_deliveries; ANALYZE webhook_endpoints`)
	require.NoError(t, err)
	const n = 2000
	accounts, streams, types, at := make([]string, n), make([]string, n), make([]string, n), make([]time.Time, n)
	for i := range n {
		accounts[i], streams[i], types[i], at[i] = "acct", "message-"+strconv.Itoa(i), "MessageQueued", time.Now()
	}
	streams[7] = "message-old-7" // one pair owed already
	rows, err := db.Pool.Query(ctx, "EXPLAIN (ANALYZE, BUFFERS) "+matchSQL, accounts, streams, types, at)
	require.NoError(t, err)
	lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
	require.NoError(t, err)
	plan := strings.Join(lines, "\n")
	t.Logf("match of %d events:\n%s", n, plan)
	require.NotContains(t, plan, "Seq Scan on webhook_deliveries")
	probes := regexp.MustCompile(`Index Only Scan using webhook_deliveries_pkey on webhook_deliveries d .*loops=(\d+)\)`).FindStringSubmatch(plan)
	require.NotNil(t, probes, "the owed check probes the primary key")
	loops, _ := strconv.Atoi(probes[1])
	require.LessOrEqual(t, loops, n, "one probe per match")

	got, err := db.Pool.Query(ctx, matchSQL, accounts, streams, types, at)
	require.NoError(t, err)
	owed := 0
	for got.Next() {
		var i int
		var id, url string
		var secrets []string
		var o bool
		require.NoError(t, got.Scan(&i, &id, &url, &secrets, &o))
		require.Equal(t, []string{"whsec_x"}, secrets)
		if o {
			owed++
			require.Equal(t, 7, i)
		}
	}
	require.NoError(t, got.Err())
	require.Equal(t, 1, owed)
}
