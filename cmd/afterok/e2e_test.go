package main

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestEndToEndEveryTestNumber sends one order with every simulator test
// number through the whole system (API, scheduler, JetStream work queue,
// workers, simulator, receipt intake, tracker) and checks each message's
// exact history, the failover, the refunds and OrderCompleted.
func TestEndToEndEveryTestNumber(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	h.checkEveryTestNumber(30 * time.Second)
}

// checkEveryTestNumber is the end-to-end check, on whatever runs behind
// the harness (one process here, several on a cluster in cluster_test.go):
// an order with every test number, and the no-receipt number alone with a
// short validity, must complete within timeout with each message's exact
// history, the failover to sim-b, the refunds and the balance.
func (h *harness) checkEveryTestNumber(timeout time.Duration) {
	t := h.t
	t.Helper()
	numbers := []string{sim.ExampleDelivered, sim.ExampleUndeliverable, sim.ExampleRejected,
		sim.ExampleFailover, sim.ExampleEarlyReceipt}
	order, ids := h.order(0, numbers...)
	// The number whose receipt never comes goes alone with a short validity,
	// so that it expires quickly while the others keep the default: on a
	// loaded machine a 3 s validity could also end the failover's retry.
	expiring, expIDs := h.order(3, sim.ExampleNoReceipt)
	numbers, ids = append(numbers, sim.ExampleNoReceipt), append(ids, expIDs...)
	h.waitOrdersCompleted(timeout, order, expiring)

	want := map[string]string{
		sim.ExampleDelivered:     "Accepted,Queued,Routed,Submitted,Delivered",
		sim.ExampleUndeliverable: "Accepted,Queued,Routed,Submitted,Failed",
		sim.ExampleRejected:      "Accepted,Queued,Routed,Failed",
		sim.ExampleFailover:      "Accepted,Queued,Routed,Retried,Queued,Routed,Submitted,Delivered",
		sim.ExampleNoReceipt:     "Accepted,Queued,Routed,Submitted,Failed",
		sim.ExampleEarlyReceipt:  "Accepted,Queued,Routed,Submitted,Delivered",
	}
	failures := map[string]domain.Failure{
		sim.ExampleUndeliverable: {Code: domain.CodeUndeliverable, Stage: domain.StageDelivery, Permanent: true},
		sim.ExampleRejected:      {Code: domain.CodeInvalidDestination, Stage: domain.StageSubmit, Permanent: true},
		sim.ExampleNoReceipt:     {Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true},
	}
	for i, to := range numbers {
		recs := h.history(domain.MessageStream(ids[i]))
		require.Equal(t, want[to], types(recs), "history of %s", to)
		evs, err := decodeAll(recs)
		require.NoError(t, err)
		last := evs[len(evs)-1]
		if f, ok := failures[to]; ok {
			got := last.(domain.MessageFailed).Failure
			require.Equal(t, f.Code, got.Code, to)
			require.Equal(t, f.Stage, got.Stage, to)
			require.True(t, got.Permanent, to)
		}
		if to == sim.ExampleFailover {
			r1 := evs[2].(domain.MessageRouted)
			retried := evs[3].(domain.MessageRetried)
			r2 := evs[5].(domain.MessageRouted)
			require.Equal(t, "sim-a", r1.Route.Provider)
			require.Equal(t, "sim-a", retried.Failure.Provider)
			require.False(t, retried.Failure.Permanent)
			require.Equal(t, 2, retried.NextAttempt)
			require.Equal(t, "sim-b", r2.Route.Provider, "failover to the second provider")
			require.Equal(t, 2, r2.Attempt)
			require.Equal(t, "sim-b", last.(domain.MessageDelivered).Provider)
		}
		if to == sim.ExampleDelivered || to == sim.ExampleEarlyReceipt {
			d := last.(domain.MessageDelivered)
			require.NotEmpty(t, d.Receipt, "the raw receipt is kept in the event")
			var raw map[string]any
			require.NoError(t, json.Unmarshal(d.Receipt, &raw))
		}
	}

	// The order completed with its counts and the failed messages refunded.
	orecs := h.history(domain.OrderStream(order))
	oev, err := decodeAll(orecs)
	require.NoError(t, err)
	done := oev[len(oev)-1].(domain.OrderCompleted)
	require.Equal(t, domain.OrderCounts{Delivered: 3, Failed: 2}, done.Counts)
	price := int64(75000) // one segment to DE
	require.Equal(t, 2*price, done.Refunded.AmountMicros)
	require.Equal(t, 3*price, done.Charged.AmountMicros)
	erecs := h.history(domain.OrderStream(expiring))
	eev, err := decodeAll(erecs)
	require.NoError(t, err)
	edone := eev[len(eev)-1].(domain.OrderCompleted)
	require.Equal(t, domain.OrderCounts{Failed: 1, Expired: 1}, edone.Counts)
	require.Equal(t, price, edone.Refunded.AmountMicros)
	require.Zero(t, edone.Charged.AmountMicros)
	a, err := accounts.Load(context.Background(), h.db.Pool, h.key.AccountID)
	require.NoError(t, err)
	require.Equal(t, h.credit-3*price, a.Balance, "charged for the delivered, refunded the failed")
	require.Zero(t, a.Reserved)

	st := h.simStats()
	require.GreaterOrEqual(t, st.ReceiptsSent, int64(4))
	h.checkInvariants(order, expiring)
}

func decodeAll(recs []eventstore.RecordedEvent) ([]domain.Event, error) {
	return eventstore.DecodeAll(recs)
}
