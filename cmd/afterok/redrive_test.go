package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestRedriveAndCancelKeepTheMoneyRight runs the whole system: an order
// whose messages fail permanently at the simulator is re-driven (its
// copies fail again and are re-driven once more), another is canceled,
// a copy is canceled while it may be on its way. Once every order is
// complete, every re-drive shows in the history, the replay and on the
// JetStream subject, afterok verify passes, and the balance is exactly
// what the money events add up to: credits − reservations + refunds,
// i.e. the credit less the delivered messages' price.
func TestRedriveAndCancelKeepTheMoneyRight(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	price := int64(75000)
	ctx := context.Background()

	failing, failingIDs := h.order(0, sim.ExampleUndeliverable, sim.ExampleRejected, sim.ExampleDelivered)
	status, sched := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered, sim.ExampleUndeliverable},
		"body": "tomorrow", "send_at": time.Now().Add(24 * time.Hour).Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", sched)
	canceled := sched["order_id"].(string)
	status, res := h.post("/v1/orders/"+canceled+"/cancel", map[string]any{"reason": "campaign called off"})
	require.Equal(t, 200, status, "%v", res)
	h.waitOrdersCompleted(60*time.Second, failing, canceled)

	// Re-driving a delivered message is refused; the order's two failed
	// ones go as a new order.
	status, res = h.post("/v1/messages/"+failingIDs[2]+"/redrive", map[string]any{"reason": "again"})
	require.Equal(t, 409, status, "%v", res)
	require.Equal(t, "not_redrivable", res["code"])
	status, res = h.post("/v1/orders/"+failing+"/redrive", map[string]any{"reason": "carrier says it is fixed", "dry_run": true})
	require.Equal(t, 200, status, "%v", res)
	require.EqualValues(t, 2, res["redrivable"])
	status, res = h.post("/v1/orders/"+failing+"/redrive", map[string]any{"reason": "carrier says it is fixed"})
	require.Equal(t, 202, status, "%v", res)
	require.EqualValues(t, 2, res["redriven"])
	first := res["order_id"].(string)
	copyOf := map[string]string{}
	for _, m := range res["messages"].([]any) {
		mm := m.(map[string]any)
		copyOf[mm["redrive_of"].(string)] = mm["message_id"].(string)
	}
	require.Len(t, copyOf, 2)
	status, res = h.post("/v1/messages/"+failingIDs[0]+"/redrive", map[string]any{"reason": "twice?"})
	require.Equal(t, 409, status, "%v", res)
	require.Equal(t, "already_redriven", res["code"])
	h.waitOrdersCompleted(60*time.Second, first)

	// The copies went through the simulator again and failed again: the
	// copy of the undeliverable one is re-driven once more, and the copy
	// of that is canceled, if it is still early enough.
	for orig, cp := range copyOf {
		_, ok := h.simSaw.saw(cp)
		require.True(t, ok, "copy %s of %s never reached the simulator", cp, orig)
		got := types(h.history(domain.MessageStream(cp)))
		require.True(t, strings.HasPrefix(got, "Accepted,Queued,Routed,") && strings.HasSuffix(got, ",Failed"), "copy %s: %s", cp, got)
	}
	status, res = h.post("/v1/messages/"+copyOf[failingIDs[0]]+"/redrive", map[string]any{"reason": "one more try"})
	require.Equal(t, 202, status, "%v", res)
	second := res["order_id"].(string)
	third := res["messages"].([]any)[0].(map[string]any)["message_id"].(string)
	status, res = h.post("/v1/messages/"+third+"/cancel", map[string]any{"reason": "no, stop"})
	require.Contains(t, []int{200, 409}, status, "%v", res)
	h.waitOrdersCompleted(60*time.Second, second)

	// The history says who did what, the views point both ways.
	for _, orig := range []string{failingIDs[0], failingIDs[1]} {
		recs := h.history(domain.MessageStream(orig))
		last := recs[len(recs)-1]
		require.Equal(t, "MessageRedriven", last.Type, "%s", types(recs))
		require.Equal(t, h.key.KeyID, last.Metadata.Actor)
		require.Equal(t, failing, last.Metadata.CorrelationID)
	}
	status, view := h.get("/v1/messages/" + failingIDs[0])
	require.Equal(t, 200, status)
	require.Equal(t, "failed", view["state"])
	require.Equal(t, copyOf[failingIDs[0]], view["redriven_as"], "%v", view)
	status, view = h.get("/v1/messages/" + third)
	require.Equal(t, 200, status)
	require.Equal(t, copyOf[failingIDs[0]], view["redrive_of"], "%v", view)
	// The listing, newest first, once the read model has them all.
	want := strings.Join([]string{second, first, canceled}, ",")
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		status, list := h.get("/v1/orders?limit=3")
		var listed []string
		for _, o := range list["orders"].([]any) {
			listed = append(listed, o.(map[string]any)["order_id"].(string))
		}
		return status == 200 && strings.Join(listed, ",") == want, "GET /v1/orders: " + strings.Join(listed, ",")
	})

	// The replay names it, and the relay published it on its subject.
	t.Setenv("DATABASE_URL", h.db.URL)
	code, out, errOut := afterok(t, "replay", "message", failingIDs[0])
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "MessageRedriven")
	require.Contains(t, out, "as="+copyOf[failingIDs[0]])
	stream, err := h.nats.JS.Stream(ctx, h.nats.Names.EventsStream())
	require.NoError(t, err)
	subject := h.nats.Names.EventSubject(h.key.AccountID, "message", "MessageRedriven")
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		msg, err := getLastMsg(ctx, stream, subject)
		if err != nil {
			return false, err.Error()
		}
		// The last re-drive recorded is the copy's: the relay publishes
		// every event, this one under its id, on the type's subject.
		recs := h.history(domain.MessageStream(copyOf[failingIDs[0]]))
		var ev string
		for _, r := range recs {
			if r.Type == "MessageRedriven" {
				ev = r.ID.String()
			}
		}
		return msg.Header.Get(jetstream.MsgIDHeader) == ev && msg.Header.Get(eventstore.HeaderStreamID) == recs[0].StreamID,
			"the copy's MessageRedriven on " + subject
	})

	// The operator's CLI re-drives the rejected message's copy (it failed
	// again): a dry run, then the re-drive, then a refusal of a second.
	rejectedCopy := copyOf[failingIDs[1]]
	code, out, errOut = afterok(t, "redrive", "message", rejectedCopy, "--reason", "from the CLI", "--dry-run", "--json")
	require.Equal(t, 0, code, errOut)
	require.JSONEq(t, `{"redrivable":1,"already_redriven":0,"not_redrivable":0}`, out)
	code, out, errOut = afterok(t, "redrive", "message", rejectedCopy, "--reason", "from the CLI", "--json")
	require.Equal(t, 0, code, errOut)
	var cli redriveJSON
	require.NoError(t, json.Unmarshal([]byte(out), &cli))
	require.Equal(t, 1, cli.Redriven)
	require.Equal(t, rejectedCopy, cli.Messages[0].RedriveOf)
	code, _, errOut = afterok(t, "redrive", "message", rejectedCopy, "--reason", "again")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "already redriven")
	code, _, errOut = afterok(t, "redrive", "order", failing, "--reason", "none left", "--failure-codes", "undeliverable")
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "not redrivable")
	code, _, _ = afterok(t, "redrive", "message", rejectedCopy)
	require.Equal(t, 2, code, "--reason is required")
	recs := h.history(domain.MessageStream(rejectedCopy))
	require.Equal(t, "MessageRedriven", recs[len(recs)-1].Type)
	require.True(t, strings.HasPrefix(recs[len(recs)-1].Metadata.Actor, "cli"), recs[len(recs)-1].Metadata.Actor)
	h.waitOrdersCompleted(60*time.Second, cli.OrderID)

	h.checkInvariants(failing, canceled, first, second, cli.OrderID)
	// Every hash chain and aggregate, and every read-model row against a
	// fresh fold of its events (redrive_of and redriven_as included).
	code, out, _ = afterok(t, "verify", "--projections")
	require.Equal(t, 0, code, "afterok verify --projections: %s", out)

	// The money: every reservation is charged or refunded, and the balance
	// is what the events add up to.
	var credits, reserved, charged, released int64
	require.NoError(t, h.db.Pool.QueryRow(ctx, `SELECT
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'AccountCredited'), 0),
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReserved'), 0),
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceCharged'), 0),
		coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReleased'), 0)
		FROM events WHERE stream_id = $1`, domain.AccountStream(h.key.AccountID)).Scan(&credits, &reserved, &charged, &released))
	a, err := accounts.Load(ctx, h.db.Pool, h.key.AccountID)
	require.NoError(t, err)
	require.Zero(t, a.Reserved)
	require.Equal(t, credits-reserved+released, a.Balance)
	require.Equal(t, reserved, charged+released, "every reservation is charged or refunded")
	// 3 + 2 + 2 + 1 + 1 messages reserved; only the one delivered is paid for.
	require.Equal(t, 9*price, reserved)
	require.Equal(t, 1*price, charged)
	require.Equal(t, h.credit-price, a.Balance)
}

// getLastMsg is the stream's last message on subject.
func getLastMsg(ctx context.Context, s jetstream.Stream, subject string) (*jetstream.RawStreamMsg, error) {
	return s.GetLastMsgForSubject(ctx, subject)
}
