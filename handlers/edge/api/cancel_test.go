package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestScheduledOrderShowsScheduled: send_at is answered in the 202 and
// the views, its messages are scheduled in the view, the order's counts
// and the search, and the validity counts from it.
func TestScheduledOrderShowsScheduled(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	sendAt := time.Now().UTC().Add(2 * time.Hour).Truncate(time.Second)
	body := order(sim.ExampleDelivered, sim.ExampleDelivered)
	body["send_at"], body["validity_seconds"] = sendAt.Format(time.RFC3339), 600
	r := e.do("POST", "/v1/orders", c.APIKey, body)
	require.Equal(t, 202, r.status, "%s", r.raw)
	require.Equal(t, sendAt.Format("2006-01-02T15:04:05.000000Z"), r.body["send_at"])
	require.Equal(t, sendAt.Add(10*time.Minute).Format("2006-01-02T15:04:05.000000Z"), r.body["expires_at"])
	orderID := r.body["order_id"].(string)
	msg := r.body["messages"].([]any)[0].(map[string]any)["message_id"].(string)
	e.caughtUp()

	o := e.get("/v1/orders/"+orderID, c.APIKey)
	counts := o.body["counts"].(map[string]any)
	require.EqualValues(t, 2, counts["scheduled"], "%s", o.raw)
	require.EqualValues(t, 0, counts["accepted"])
	require.Equal(t, r.body["send_at"], o.body["send_at"])
	m := e.get("/v1/messages/"+msg, c.APIKey)
	require.Equal(t, "scheduled", m.body["state"])
	require.Equal(t, r.body["send_at"], m.body["send_at"])
	page := e.get("/v1/messages?state=scheduled", c.APIKey)
	require.Len(t, page.body["messages"], 2)

	// The same order in the past (beyond the tolerance) or too far ahead
	// is refused, naming the field.
	for _, at := range []time.Time{time.Now().Add(-2 * time.Minute), time.Now().Add(36 * 24 * time.Hour)} {
		body["send_at"] = at.Format(time.RFC3339)
		r := e.do("POST", "/v1/orders", c.APIKey, body)
		requireProblem(t, r, 422, "validation_failed")
		require.Equal(t, "send_at", r.body["errors"].([]any)[0].(map[string]any)["field"])
	}
	body["send_at"] = "in an hour"
	requireProblem(t, e.do("POST", "/v1/orders", c.APIKey, body), 400, "invalid_request")
}

// TestCancel: a message is canceled with the key's id and the reason in
// its history; a repeat answers the same; one already routed is 409
// not_cancelable; another account's message or order is 404; an order
// cancel counts what it canceled and what it could not, and answers the
// same when repeated. Nothing is refunded here (the tracker does that).
func TestCancel(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	other := e.account(10_000_000)
	readOnly := e.account(10_000_000, accounts.ScopeMessagesRead, accounts.ScopeOrdersWrite)
	orderID, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered)
	e.advance(ids[1], queue)
	e.advance(ids[2], queue, route("sim-a"))
	e.advance(ids[3], queue, route("sim-a"), submit, deliver)

	for _, key := range []string{other.APIKey} {
		requireProblem(t, e.do("POST", "/v1/messages/"+ids[0]+"/cancel", key, nil), 404, "not_found")
		requireProblem(t, e.do("POST", "/v1/orders/"+orderID+"/cancel", key, nil), 404, "not_found")
	}
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[0]+"/cancel", readOnly.APIKey, nil), 403, "forbidden")
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[0]+"/cancel", c.APIKey, `{"reason":"x","extra":1}`), 400, "invalid_request")

	r := e.do("POST", "/v1/messages/"+ids[0]+"/cancel", c.APIKey, map[string]any{"reason": "customer called it off"})
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.Equal(t, "canceled", r.body["state"])
	require.NotNil(t, r.body["timestamps"].(map[string]any)["canceled_at"])
	again := e.do("POST", "/v1/messages/"+ids[0]+"/cancel", c.APIKey, nil)
	require.Equal(t, 200, again.status, "a repeated cancel: %s", again.raw)
	require.Equal(t, "canceled", again.body["state"])
	recs, err := e.store.ReadStream(context.Background(), domain.MessageStream(ids[0]), 1)
	require.NoError(t, err)
	require.Len(t, recs, 2, "the repeat appended nothing")
	ev, err := recs[1].Decode()
	require.NoError(t, err)
	require.Equal(t, domain.MessageCanceled{Actor: c.KeyID, Reason: "customer called it off", At: ev.(domain.MessageCanceled).At}, ev)
	require.Equal(t, c.KeyID, recs[1].Metadata.Actor)
	require.Equal(t, orderID, recs[1].Metadata.CorrelationID)

	requireProblem(t, e.do("POST", "/v1/messages/"+ids[2]+"/cancel", c.APIKey, nil), 409, "not_cancelable")
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[3]+"/cancel", c.APIKey, nil), 409, "not_cancelable")

	e.caughtUp()
	before := e.balance(c.AccountID)
	for range 2 { // a retry of the request answers alike and changes nothing
		r = e.do("POST", "/v1/orders/"+orderID+"/cancel", c.APIKey, map[string]any{"reason": "campaign stopped"})
		require.Equal(t, 200, r.status, "%s", r.raw)
		require.EqualValues(t, map[string]any{"canceled": 2.0, "not_cancelable": 2.0}, r.body)
	}
	types := func(id string) []string {
		recs, err := e.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
		require.NoError(t, err)
		var out []string
		for _, r := range recs {
			out = append(out, r.Type)
		}
		return out
	}
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageCanceled"}, types(ids[1]))
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted"}, types(ids[2]))
	require.Equal(t, before, e.balance(c.AccountID), "the API refunds nothing itself")
	e.caughtUp()
	o := e.get("/v1/orders/"+orderID, c.APIKey)
	counts := o.body["counts"].(map[string]any)
	require.EqualValues(t, 2, counts["canceled"], "%s", o.raw)
	require.Len(t, e.get("/v1/messages?state=canceled", c.APIKey).body["messages"], 2)
}

// TestOrderCancelIsBatched: an order larger than one batch is canceled in
// several transactions, all of it, and the answer counts every message.
func TestOrderCancelIsBatched(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	to := make([]string, 1200)
	for i := range to {
		to[i] = fmt.Sprintf("+49151123%05d", i)
	}
	orderID, ids := e.placeOrder(c.APIKey, to...)
	e.caughtUp()
	xids := map[string]bool{}
	r := e.do("POST", "/v1/orders/"+orderID+"/cancel", c.APIKey, nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.EqualValues(t, map[string]any{"canceled": 1200.0, "not_cancelable": 0.0}, r.body)
	rows, err := e.db.Pool.Query(context.Background(), `SELECT xid::text FROM events WHERE type = 'MessageCanceled'
		AND stream_id = ANY($1)`, streams(ids))
	require.NoError(t, err)
	n := 0
	for rows.Next() {
		var x string
		require.NoError(t, rows.Scan(&x))
		xids[x] = true
		n++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, 1200, n)
	require.GreaterOrEqual(t, len(xids), 3, "1,200 messages in batches of 500 take at least three transactions")
}

func streams(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = domain.MessageStream(id)
	}
	return out
}
