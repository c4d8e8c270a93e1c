package projections_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/projections"
)

// TestVerifyReportsEveryDrift damages one row of each read model in a
// different way and requires verify to name each of them.
func TestVerifyReportsEveryDrift(t *testing.T) {
	f := newFixture(t)
	f.run(projections.Config{})
	acct := f.openAccount(100_000_000)
	order, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002", "+4915100000003")
	f.deliverAll(ids[0], ids[1])
	f.queue(ids[2])
	f.route(ids[2], "sim-a")
	f.fail(ids[2], domain.CodeRejected, domain.StageSubmit)
	f.settle(order, ids...)
	other, more := f.placeOrder(acct, "+4915100000009")
	f.caughtUp()
	f.requireVerified()

	damage := []string{
		`UPDATE read_messages SET state = 'delivered', lifecycle_state = 'delivered' WHERE message_id = '` + ids[2] + `'`,
		`DELETE FROM read_messages WHERE message_id = '` + more[0] + `'`,
		`UPDATE read_orders SET refunded_micros = refunded_micros + 1 WHERE order_id = '` + order + `'`,
		`DELETE FROM read_orders WHERE order_id = '` + other + `'`,
		`UPDATE read_accounts SET balance_micros = 0 WHERE account_id = '` + acct + `'`,
		`UPDATE read_provider_stats SET delivered = delivered + 1`,
		`UPDATE read_provider_failures SET count = 7`,
	}
	for _, sql := range damage {
		_, err := f.db.Pool.Exec(f.ctx, sql)
		require.NoError(t, err, sql)
	}
	rep, err := projections.Verify(f.ctx, f.db.Pool, nil)
	require.NoError(t, err)
	found := func(table, key, detail string) bool {
		return slices.ContainsFunc(rep.Differences, func(d projections.Difference) bool {
			return d.Table == table && (key == "" || d.Key == key) && strings.Contains(d.Detail, detail)
		})
	}
	var all []string
	for _, d := range rep.Differences {
		all = append(all, d.String())
	}
	report := strings.Join(all, "\n")
	require.True(t, found("read_messages", ids[2], "State: events say failed, row has delivered"), report)
	require.True(t, found("read_messages", more[0], "no row"), report)
	require.True(t, found("read_orders", order, "counts"), "the damaged message no longer adds up in its order:\n%s", report)
	require.True(t, found("read_orders", order, "charged/refunded 150000/75001"), report)
	require.True(t, found("read_orders", other, "no row"), report)
	require.True(t, found("read_accounts", acct, "Balance: events say"), report)
	require.True(t, found("read_provider_stats", "", "the events say"), report)
	require.True(t, found("read_provider_failures", "", "count is 7, the events say 1"), report)
}

// TestChainAgreesWithEventstore holds the per-stream chain check of the
// history endpoint to eventstore's own verification: after tampering with
// stored events in several ways, both must call exactly the same streams
// broken.
func TestChainAgreesWithEventstore(t *testing.T) {
	f := newFixture(t)
	acct := f.openAccount(100_000_000)
	_, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002", "+4915100000003", "+4915100000004", "+4915100000005")
	f.deliverAll(ids...)
	for _, id := range ids {
		h, err := projections.MessageHistory(f.ctx, f.db.Pool, projections.ForAccount(acct), id)
		require.NoError(t, err)
		require.True(t, h.ChainIntact, "%v", h.Problems)
		require.Len(t, h.Events, 5)
	}
	_, err := f.db.Pool.Exec(f.ctx, `ALTER TABLE events DISABLE TRIGGER events_immutable`)
	require.NoError(t, err)
	tamper := map[string]string{
		ids[0]: `UPDATE events SET data = jsonb_set(data, '{to}', '"+4915199999999"') WHERE stream_id = $1 AND stream_version = 1`,
		ids[1]: `UPDATE events SET metadata = metadata || '{"actor":"someone else"}' WHERE stream_id = $1 AND stream_version = 3`,
		ids[2]: `UPDATE events SET recorded_at = recorded_at + interval '1 second' WHERE stream_id = $1 AND stream_version = 5`,
		ids[3]: `UPDATE events SET prev_hash = hash WHERE stream_id = $1 AND stream_version = 2`,
	}
	for id, sql := range tamper {
		_, err := f.db.Pool.Exec(f.ctx, sql, domain.MessageStream(id))
		require.NoError(t, err)
	}
	rep, err := eventstore.Verify(f.ctx, f.db.Pool, nil)
	require.NoError(t, err)
	var ours []string
	for _, id := range ids {
		h, err := projections.MessageHistory(f.ctx, f.db.Pool, projections.ForAccount(acct), id)
		require.NoError(t, err)
		if !h.ChainIntact {
			ours = append(ours, domain.MessageStream(id))
		}
	}
	theirs := rep.FailedStreams()
	slices.Sort(ours)
	slices.Sort(theirs)
	require.Len(t, ours, 4)
	require.Equal(t, theirs, ours)
}

// TestVerifyTakesEachPartitionAtItsOwnCheckpoint: a partitioned projection
// commits each partition's rows with that partition's checkpoint, so while
// one partition lags, an order in another has money beyond the oldest
// checkpoint. Verify must check that order up to its own partition's
// checkpoint: no false difference; and a damaged row is still named.
func TestVerifyTakesEachPartitionAtItsOwnCheckpoint(t *testing.T) {
	f := newFixture(t)
	stop := f.start(projections.Config{})
	acct := f.openAccount(100_000_000)
	order, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002")
	f.deliverAll(ids[0])
	f.queue(ids[1])
	f.route(ids[1], "sim-a")
	f.fail(ids[1], domain.CodeRejected, domain.StageSubmit)
	f.settle(order, ids...)
	f.caughtUp()
	stop()
	f.requireVerified()

	const consumer = "projection:messages"
	var n int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FROM consumer_partitions WHERE consumer = $1`, consumer).Scan(&n))
	require.Greater(t, n, 1, "the messages projection runs in partitions")
	own := eventstore.PartitionOf(order, n)
	// Another partition is back at the start of the store, as if it lagged.
	tag, err := f.db.Pool.Exec(f.ctx, `UPDATE consumer_partitions SET xid = '0', position = 0
		WHERE consumer = $1 AND partition <> $2`, consumer, own)
	require.NoError(t, err)
	require.Positive(t, tag.RowsAffected())
	rep, err := projections.Verify(f.ctx, f.db.Pool, nil)
	require.NoError(t, err)
	require.Empty(t, rep.Differences, "an order ahead of the oldest partition is not a difference")

	_, err = f.db.Pool.Exec(f.ctx, `UPDATE read_orders SET refunded_micros = refunded_micros + 1 WHERE order_id = $1`, order)
	require.NoError(t, err)
	rep, err = projections.Verify(f.ctx, f.db.Pool, nil)
	require.NoError(t, err)
	require.True(t, slices.ContainsFunc(rep.Differences, func(d projections.Difference) bool {
		return d.Table == "read_orders" && d.Key == order && strings.Contains(d.Detail, "charged/refunded")
	}), "%v", rep.Differences)
}
