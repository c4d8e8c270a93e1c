package main

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestScheduledSendAndCancel runs the whole system: an order with a
// send_at about 3 s ahead is not submitted to the simulator before it and
// is delivered after it; an order scheduled an hour ahead and canceled is
// refunded in full, completes, and never reaches the simulator; a message
// canceled from a running order leaves the rest to be delivered. Then
// `afterok verify` passes and the balance is what the money events say:
// credits − reservations + refunds (charges only turn reservations into
// spending).
func TestScheduledSendAndCancel(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	price := int64(75000)

	sendAt := time.Now().Add(3 * time.Second).UTC().Truncate(time.Second).Add(time.Second)
	status, soon := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered, sim.ExampleDelivered},
		"body": "later", "send_at": sendAt.Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", soon)
	status, later := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered, sim.ExampleUndeliverable, sim.ExampleFailover},
		"body": "much later", "send_at": time.Now().Add(time.Hour).Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", later)
	soonID, laterID := soon["order_id"].(string), later["order_id"].(string)
	soonIDs, laterIDs := messageIDs(soon), messageIDs(later)

	status, res := h.post("/v1/orders/"+laterID+"/cancel", map[string]any{"reason": "campaign called off"})
	require.Equal(t, 200, status, "%v", res)
	require.Equal(t, map[string]any{"canceled": 3.0, "not_cancelable": 0.0}, res)

	// Before its send_at the first order waits, scheduled.
	status, view := h.get("/v1/orders/" + soonID)
	require.Equal(t, 200, status)
	if time.Now().Before(sendAt) {
		require.EqualValues(t, 2, view["counts"].(map[string]any)["scheduled"], "%v", view)
	}
	h.waitOrdersCompleted(60*time.Second, soonID, laterID)

	for _, id := range soonIDs {
		at, ok := h.simSaw.saw(id)
		require.True(t, ok, "scheduled message %s never reached the simulator", id)
		require.False(t, at.Before(sendAt), "submitted at %s, before its send_at %s", at, sendAt)
		recs := h.history(domain.MessageStream(id))
		require.Equal(t, "Accepted,Queued,Routed,Submitted,Delivered", types(recs))
		require.False(t, recs[1].RecordedAt.Before(sendAt), "queued at %s, before its send_at %s", recs[1].RecordedAt, sendAt)
	}
	for _, id := range laterIDs {
		_, ok := h.simSaw.saw(id)
		require.False(t, ok, "canceled message %s reached the simulator", id)
		require.Equal(t, "Accepted,Canceled", types(h.history(domain.MessageStream(id))))
	}
	evs, err := decodeAll(h.history(domain.OrderStream(laterID)))
	require.NoError(t, err)
	done := evs[len(evs)-1].(domain.OrderCompleted)
	require.Equal(t, domain.OrderCounts{Canceled: 3}, done.Counts)
	require.Equal(t, 3*price, done.Refunded.AmountMicros, "everything refunded")
	require.Zero(t, done.Charged.AmountMicros)

	// A running order: one message canceled before anything dispatches it
	// is not possible to arrange from outside, so cancel the order's last
	// message and accept either answer: canceled (then refunded) or
	// not_cancelable (then delivered).
	run, runIDs := h.order(0, sim.ExampleDelivered, sim.ExampleDelivered)
	status, one := h.post("/v1/messages/"+runIDs[1]+"/cancel", map[string]any{"reason": "one less"})
	require.Contains(t, []int{200, 409}, status, "%v", one)
	h.waitOrdersCompleted(60*time.Second, run)
	last := types(h.history(domain.MessageStream(runIDs[1])))
	if status == 200 {
		require.Contains(t, []string{"Accepted,Canceled", "Accepted,Queued,Canceled"}, last)
	} else {
		require.Equal(t, "Accepted,Queued,Routed,Submitted,Delivered", last)
	}

	h.checkInvariants(soonID, laterID, run)
	t.Setenv("DATABASE_URL", h.db.URL)
	code, out, _ := afterok(t, "verify")
	require.Equal(t, 0, code, "afterok verify: %s", out)

	// The balance is what the money events add up to.
	ctx := context.Background()
	var credits, reserved, released int64
	require.NoError(t, h.db.Pool.QueryRow(ctx, `SELECT
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'AccountCredited'), 0),
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReserved'), 0),
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReleased'), 0)
		FROM events WHERE stream_id = $1`, domain.AccountStream(h.key.AccountID)).Scan(&credits, &reserved, &released))
	a, err := accounts.Load(ctx, h.db.Pool, h.key.AccountID)
	require.NoError(t, err)
	require.Equal(t, credits-reserved+released, a.Balance)
	delivered := int64(3)
	if status == 409 {
		delivered = 4
	}
	require.Equal(t, h.credit-delivered*price, a.Balance, "only the delivered messages are paid for")
	require.Zero(t, a.Reserved)
}

// get reads an API resource with the test account's key.
func (h *harness) get(path string) (int, map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.cfg.Addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+h.key.APIKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

func messageIDs(accepted map[string]any) []string {
	var ids []string
	for _, m := range accepted["messages"].([]any) {
		ids = append(ids, m.(map[string]any)["message_id"].(string))
	}
	return ids
}
