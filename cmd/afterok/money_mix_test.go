package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestMoneyAfterAMixOfActions tops an account up through the admin
// endpoint (BalanceCredited on top of the opening AccountCredited), then
// runs orders through a mix of everything that moves money: a scheduled
// order whose price is held at once and of which one message is canceled
// while the others stay scheduled, messages canceled while queued,
// deliveries, failures, and re-drives of the failures (failing again). The
// dispatch role is held back at first, so that the queued messages are
// certainly still queued when they are canceled. With messages still
// scheduled, and again once they are canceled too, afterok verify passes
// and the balance is what the money events add up to.
func TestMoneyAfterAMixOfActions(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	const price = int64(75000)
	noDispatch := slices.DeleteFunc(slices.Clone(allRoles), func(r string) bool { return r == roleDispatch })
	h.start(dispatch.Hooks{}, noDispatch...)
	admin, err := h.running.sys.accounts.IssueKey(ctx, h.key.AccountID, []string{accounts.ScopeAdmin}, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	const topUp = int64(2_000_000)
	status, res := h.doAs(admin.APIKey, "POST", "/v1/accounts/"+h.key.AccountID+"/credits", map[string]any{"amount_micros": topUp, "reason": "invoice 7 paid"})
	require.Equal(t, 201, status, "%v", res)
	account := func() (balance, reserved int64) {
		t.Helper()
		status, a := h.get("/v1/account")
		require.Equal(t, 200, status, "%v", a)
		return int64(a["balance"].(map[string]any)["amount_micros"].(float64)), int64(a["reserved"].(map[string]any)["amount_micros"].(float64))
	}

	// A scheduled order is paid for (held) the moment it is accepted,
	// long before it is due.
	status, sched := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered},
		"body": "next week", "send_at": time.Now().Add(7 * 24 * time.Hour).Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", sched)
	require.EqualValues(t, 3*price, sched["price"].(map[string]any)["amount_micros"])
	balance, reserved := account()
	require.Equal(t, 3*price, reserved, "a scheduled order's price is reserved at its 202")
	require.Equal(t, h.credit+topUp-3*price, balance)
	scheduledOrder, scheduledIDs := sched["order_id"].(string), messageIDs(sched)
	status, res = h.post("/v1/messages/"+scheduledIDs[0]+"/cancel", map[string]any{"reason": "one recipient opted out"})
	require.Equal(t, 200, status, "%v", res)

	// Orders queued with no worker to take them: one message of each is
	// canceled while it certainly waits in the queue.
	queuedOrder, queuedIDs := h.order(0, sim.ExampleDelivered, sim.ExampleUndeliverable, sim.ExampleRejected)
	failingOrder, failingIDs := h.order(0, sim.ExampleUndeliverable, sim.ExampleRejected, sim.ExampleDelivered, sim.ExampleDelivered)
	for _, id := range []string{queuedIDs[0], failingIDs[3]} {
		storetest.Poll(t, 30*time.Second, func() (bool, string) {
			got := types(h.history(domain.MessageStream(id)))
			return got == "Accepted,Queued", id + ": " + got
		})
		status, res = h.post("/v1/messages/"+id+"/cancel", map[string]any{"reason": "sent by mistake"})
		require.Equal(t, 200, status, "%v", res)
	}

	// The workers start: the rest is delivered or fails; the failures are
	// re-driven, fail again, and one copy is re-driven once more.
	h.stop()
	h.start(dispatch.Hooks{})
	h.waitOrdersCompleted(60*time.Second, queuedOrder, failingOrder)
	status, res = h.post("/v1/orders/"+failingOrder+"/redrive", map[string]any{"reason": "carrier fixed"})
	require.Equal(t, 202, status, "%v", res)
	require.EqualValues(t, 2, res["redriven"])
	firstRedrive, copies := res["order_id"].(string), messageIDs(res)
	status, res = h.post("/v1/orders/"+queuedOrder+"/redrive", map[string]any{"reason": "carrier fixed", "failure_codes": []string{"undeliverable"}})
	require.Equal(t, 202, status, "%v", res)
	require.EqualValues(t, 1, res["redriven"])
	secondRedrive := res["order_id"].(string)
	h.waitOrdersCompleted(60*time.Second, firstRedrive, secondRedrive)
	status, res = h.post("/v1/messages/"+copies[0]+"/redrive", map[string]any{"reason": "one more try"})
	require.Equal(t, 202, status, "%v", res)
	thirdRedrive := res["order_id"].(string)
	h.waitOrdersCompleted(60*time.Second, thirdRedrive)
	completed := []string{queuedOrder, failingOrder, firstRedrive, secondRedrive, thirdRedrive}

	// Delivered: the failing order's third message only. Everything else
	// failed or was canceled, and two scheduled messages wait.
	const delivered, waiting = 1, 2
	t.Setenv("DATABASE_URL", h.db.URL)
	requireMoney := func(outstanding int64) {
		t.Helper()
		code, out, _ := afterok(t, "verify")
		require.Equal(t, 0, code, "afterok verify: %s", out)
		var opening, credited, reservations, charges, refunds int64
		require.NoError(t, h.db.Pool.QueryRow(ctx, `SELECT
			coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'AccountCredited'), 0),
			coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceCredited'), 0),
			coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReserved'), 0),
			coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceCharged'), 0),
			coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReleased'), 0)
			FROM events WHERE stream_id = $1`, domain.AccountStream(h.key.AccountID)).Scan(&opening, &credited, &reservations, &charges, &refunds))
		require.Equal(t, h.credit, opening)
		require.Equal(t, topUp, credited)
		credits := opening + credited
		balance, reserved := account()
		// The issue's identity, balance = credits − charges − reservations
		// + refunds, in this model's terms. A reservation (BalanceReserved)
		// takes an order's price out of the balance at acceptance and
		// holds it; a charge (BalanceCharged) only converts held money
		// into spent money, so it does not move the balance again; a
		// refund (BalanceReleased) gives held money back. So, with
		// "reservations" every price ever held:
		require.Equal(t, credits-reservations+refunds, balance, "balance = credits − reservations + refunds")
		// ...and, with "reservations" what is held now (reserved: held,
		// neither charged nor refunded yet), the refunds are already out
		// of it and the charges are what was spent:
		require.Equal(t, reservations-charges-refunds, reserved, "reserved = reservations − charges − refunds")
		require.Equal(t, credits-charges-reserved, balance, "balance = credits − charges − outstanding reservations")
		// What is held is the price of the messages not final yet, and
		// what was spent the price of the ones delivered.
		require.Equal(t, outstanding, reserved)
		require.Equal(t, delivered*price, charges)
		require.Equal(t, h.credit+topUp-delivered*price-outstanding, balance)
	}
	h.checkMessagesFinal(completed...)
	requireMoney(waiting * price)

	// Canceling what still waits releases the rest.
	status, res = h.post("/v1/orders/"+scheduledOrder+"/cancel", map[string]any{"reason": "campaign called off"})
	require.Equal(t, 200, status, "%v", res)
	// canceled counts the message canceled before, too (a retried cancel
	// answers alike).
	require.Equal(t, map[string]any{"canceled": 3.0, "not_cancelable": 0.0}, res)
	h.waitOrdersCompleted(60*time.Second, scheduledOrder)
	h.checkInvariants(append(completed, scheduledOrder)...)
	requireMoney(0)
	for _, id := range scheduledIDs {
		_, ok := h.simSaw.saw(id)
		require.False(t, ok, "canceled scheduled message %s reached the simulator", id)
	}
	for _, id := range []string{queuedIDs[0], failingIDs[3]} {
		_, ok := h.simSaw.saw(id)
		require.False(t, ok, "canceled queued message %s reached the simulator", id)
		require.Equal(t, "Accepted,Queued,Canceled", types(h.history(domain.MessageStream(id))))
	}
}

// checkMessagesFinal requires every message of the orders to have exactly
// one final event (checkInvariants without its nothing-reserved rule).
func (h *harness) checkMessagesFinal(orders ...string) {
	h.t.Helper()
	var notOne int
	require.NoError(h.t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM (
		SELECT stream_id FROM events WHERE metadata->>'correlation_id' = ANY($1) AND stream_id LIKE 'message-%'
		GROUP BY stream_id HAVING count(*) FILTER (WHERE type IN ('MessageDelivered','MessageFailed','MessageCanceled')) <> 1) x`,
		orders).Scan(&notOne))
	require.Zero(h.t, notOne, "messages without exactly one final event")
}
