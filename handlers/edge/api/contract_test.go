package api_test

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/projections"
)

// TestAcceptedNamesItsState: the 202 says state, as every other resource
// does, and keeps status for the clients that read it.
func TestAcceptedNamesItsState(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered))
	require.Equal(t, 202, r.status, "%s", r.raw)
	require.Equal(t, "accepted", r.body["state"])
	require.Equal(t, "accepted", r.body["status"])
}

// TestEmptyIdempotencyKeyIsRefused: a client that sends the header means
// to be safe to retry; ignoring an empty one would make its retries
// double orders.
func TestEmptyIdempotencyKeyIsRefused(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	before := e.eventCount()
	r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered), "Idempotency-Key", "")
	requireProblem(t, r, 400, "invalid_request")
	require.Contains(t, r.body["detail"], "Idempotency-Key")
	require.Equal(t, before, e.eventCount())
}

// TestIdempotencyComparesTheOrderNotTheBytes: the same order with its
// keys in another order and other whitespace is a replay, not a 409, and
// the replay carries the original Location.
func TestIdempotencyComparesTheOrderNotTheBytes(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	first := e.do("POST", "/v1/orders", c.APIKey,
		`{"messages":[{"to":"`+sim.ExampleDelivered+`","body":"Hi","from":"Acme"}],"validity_seconds":600,"metadata":{"a":1,"b":{"c":"d"}}}`,
		"Idempotency-Key", "canon-1")
	require.Equal(t, 202, first.status, "%s", first.raw)
	location := first.header.Get("Location")
	require.Equal(t, "/v1/orders/"+first.body["order_id"].(string), location)

	again := e.do("POST", "/v1/orders", c.APIKey,
		"{ \"metadata\": {\"b\": {\"c\": \"d\"}, \"a\": 1.0},\n  \"validity_seconds\": 600,\n"+
			`  "messages": [ {"from": "Acme", "body": "H\u0069", "to": "`+sim.ExampleDelivered+`"} ] }`,
		"Idempotency-Key", "canon-1")
	require.Equal(t, 202, again.status, "%s", again.raw)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, first.raw, again.raw)
	require.Equal(t, location, again.header.Get("Location"), "a replay answers with the original Location")
	require.Equal(t, int64(10_000_000-75_000), e.balance(c.AccountID).Balance, "charged once")

	// A real difference anywhere is still a conflict.
	for name, body := range map[string]string{
		"body":     `{"messages":[{"to":"` + sim.ExampleDelivered + `","body":"Ho","from":"Acme"}],"validity_seconds":600,"metadata":{"a":1,"b":{"c":"d"}}}`,
		"validity": `{"messages":[{"to":"` + sim.ExampleDelivered + `","body":"Hi","from":"Acme"}],"validity_seconds":601,"metadata":{"a":1,"b":{"c":"d"}}}`,
		"metadata": `{"messages":[{"to":"` + sim.ExampleDelivered + `","body":"Hi","from":"Acme"}],"validity_seconds":600,"metadata":{"a":2,"b":{"c":"d"}}}`,
		"sender":   `{"messages":[{"to":"` + sim.ExampleDelivered + `","body":"Hi"}],"validity_seconds":600,"metadata":{"a":1,"b":{"c":"d"}}}`,
	} {
		requireProblem(t, e.do("POST", "/v1/orders", c.APIKey, body, "Idempotency-Key", "canon-1"), 409, "idempotency_conflict")
		_ = name
	}
}

// TestOneTimestampFormat: every time the API writes — the 202, the
// read side, the events' envelope — is RFC 3339 UTC with exactly six
// fractional digits, and the 202's accepted_at is the one reads show.
// (An event's own data is shown as stored: it is hash-chained.)
func TestOneTimestampFormat(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000, accounts.ScopeOrdersWrite, accounts.ScopeMessagesRead, accounts.ScopeEventsRead, accounts.ScopeAdmin)
	accepted := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered))
	require.Equal(t, 202, accepted.status, "%s", accepted.raw)
	orderID := accepted.body["order_id"].(string)
	msgID := accepted.body["messages"].([]any)[0].(map[string]any)["message_id"].(string)
	e.advance(msgID, queue, route("sim-a"), submit, deliver)
	e.caughtUp()

	format := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$`)
	looksLikeTime := regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d`)
	var walk func(path string, v any, found *int)
	walk = func(path string, v any, found *int) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if k == "data" && strings.Contains(path, "events") {
					continue // the event's own payload, as stored
				}
				walk(path+"."+k, x, found)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x, found)
			}
		case string:
			if looksLikeTime.MatchString(v) {
				*found++
				require.Regexp(t, format, v, "%s", path)
			}
		}
	}
	for _, path := range []string{"/v1/orders/" + orderID, "/v1/orders/" + orderID + "/messages", "/v1/messages/" + msgID,
		"/v1/messages/" + msgID + "?as_of=" + time.Now().UTC().Format(time.RFC3339Nano), "/v1/messages?to=" + sim.ExampleDelivered[1:],
		"/v1/messages/" + msgID + "/events", "/v1/events", "/v1/accounts/" + c.AccountID, "/v1/providers/stats"} {
		found := 0
		walk(path, e.get(path, c.APIKey).body, &found)
		require.NotZero(t, found, "%s shows no time at all", path)
	}
	found := 0
	walk("202", accepted.body, &found)
	require.Equal(t, 2, found, "accepted_at and expires_at")

	o := e.get("/v1/orders/"+orderID, c.APIKey).body
	require.Equal(t, accepted.body["accepted_at"], o["timestamps"].(map[string]any)["accepted_at"], "the 202 and the read side agree")
	require.Equal(t, accepted.body["expires_at"], o["expires_at"])
}

// TestEventsTypeFilterFillsPages: ?type= narrows the events before the
// limit, so a page holds limit matching events while there are more,
// and paging with next_after finds every one exactly once.
func TestEventsTypeFilterFillsPages(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(100_000_000)
	var want []string
	for range 5 {
		r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered))
		require.Equal(t, 202, r.status, "%s", r.raw)
		want = append(want, r.body["order_id"].(string))
	}
	// The tail shows an event once every older transaction on the server
	// has ended; wait for all five, then page through them.
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		r := e.do("GET", "/v1/events?type=OrderAccepted&limit=100", c.APIKey, nil)
		return len(r.body["events"].([]any)) == len(want), string(r.raw)
	})
	var got []string
	after := "0"
	for _, size := range []int{2, 2, 1} {
		r := e.do("GET", "/v1/events?type=OrderAccepted&limit=2&after="+after, c.APIKey, nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		evs := r.body["events"].([]any)
		require.Len(t, evs, size, "after %s: a page short of its limit while matching events remain", after)
		for _, ev := range evs {
			ev := ev.(map[string]any)
			require.Equal(t, "OrderAccepted", ev["type"])
			got = append(got, strings.TrimPrefix(ev["stream"].(string), "order-"))
		}
		after = fmt.Sprint(int64(r.body["next_after"].(float64)))
	}
	require.ElementsMatch(t, want, got)
}

// TestEventsOrderFilterFillsPages: ?order_id= narrows the events before
// the limit too, so one order's events among many other orders' come in
// full pages, each exactly once.
func TestEventsOrderFilterFillsPages(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(100_000_000)
	var target string
	for i := range 6 {
		r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered, sim.ExampleDelivered))
		require.Equal(t, 202, r.status, "%s", r.raw)
		if i == 2 {
			target = r.body["order_id"].(string)
		}
	}
	// OrderAccepted, BalanceReserved and two MessageAccepted carry the order.
	const want = 4
	q := "/v1/events?order_id=" + target
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		r := e.do("GET", q+"&limit=100", c.APIKey, nil)
		return len(r.body["events"].([]any)) == want, string(r.raw)
	})
	seen := map[string]bool{}
	after := "0"
	for _, size := range []int{3, 1} {
		r := e.do("GET", q+"&limit=3&after="+after, c.APIKey, nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		evs := r.body["events"].([]any)
		require.Len(t, evs, size, "after %s: a page short of its limit while matching events remain", after)
		for _, ev := range evs {
			ev := ev.(map[string]any)
			require.Equal(t, target, ev["metadata"].(map[string]any)["correlation_id"])
			require.False(t, seen[ev["id"].(string)], "event %s twice", ev["id"])
			seen[ev["id"].(string)] = true
		}
		after = fmt.Sprint(int64(r.body["next_after"].(float64)))
	}
	require.Len(t, seen, want)
}

// TestExpiredIsAFilterAsItIsACount: an order's counts carry expired (the
// failed messages whose failure code is expired), so state=expired lists
// exactly those, on every list that takes a state.
func TestExpiredIsAFilterAsItIsACount(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	orderID, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered)
	e.advance(ids[0], queue, route("sim-a"), submit, deliver)
	e.advance(ids[1], queue, route("sim-a"), failWith(domain.CodeRejected, domain.StageSubmit))
	e.advance(ids[2], queue, route("sim-a"), submit, failWith(domain.CodeExpired, domain.StageExpiry))
	e.caughtUp()

	counts := e.get("/v1/orders/"+orderID, c.APIKey).body["counts"].(map[string]any)
	require.EqualValues(t, 2, counts["failed"])
	require.EqualValues(t, 1, counts["expired"])
	for _, path := range []string{"/v1/orders/" + orderID + "/messages?state=expired", "/v1/messages?state=expired",
		"/v1/messages?state=expired&order_id=" + orderID} {
		msgs := e.get(path, c.APIKey).body["messages"].([]any)
		require.Len(t, msgs, 1, path)
		m := msgs[0].(map[string]any)
		require.Equal(t, ids[2], m["message_id"], path)
		require.Equal(t, "failed", m["state"], "%s: expired is a kind of failed", path)
		require.Equal(t, domain.CodeExpired, m["failure"].(map[string]any)["code"])
	}
	require.Len(t, e.get("/v1/messages?state=failed", c.APIKey).body["messages"].([]any), 2, "failed still lists both")
}

// TestViewsShowBodyAndMetadata: a message's view shows its text and an
// order's the metadata its client sent, from the read model and from the
// stream alike (before the projector has caught up, and with as_of).
func TestViewsShowBodyAndMetadata(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	r := e.do("POST", "/v1/orders", c.APIKey, map[string]any{
		"messages": []map[string]any{{"to": sim.ExampleDelivered, "body": "Your code is 1234"}},
		"metadata": map[string]any{"campaign": "spring", "n": 3}})
	require.Equal(t, 202, r.status, "%s", r.raw)
	orderID := r.body["order_id"].(string)
	msgID := r.body["messages"].([]any)[0].(map[string]any)["message_id"].(string)
	plain, _ := e.placeOrder(c.APIKey, sim.ExampleDelivered)
	e.advance(msgID, queue)
	e.caughtUp()

	want := map[string]any{"campaign": "spring", "n": float64(3)}
	require.Equal(t, want, e.get("/v1/orders/"+orderID, c.APIKey).body["metadata"])
	require.Nil(t, e.get("/v1/orders/"+plain, c.APIKey).body["metadata"], "no metadata is null")
	for _, path := range []string{"/v1/messages/" + msgID, "/v1/messages/" + msgID + "?as_of=" + time.Now().UTC().Format(time.RFC3339Nano)} {
		require.Equal(t, "Your code is 1234", e.get(path, c.APIKey).body["body"], path)
	}
	msgs := e.get("/v1/orders/"+orderID+"/messages", c.APIKey).body["messages"].([]any)
	require.Equal(t, "Your code is 1234", msgs[0].(map[string]any)["body"])

	// verify --projections compares the new columns with a fresh fold.
	rep, err := projections.Verify(context.Background(), e.db.Pool, nil)
	require.NoError(t, err)
	require.Empty(t, rep.Differences)
	require.NotZero(t, rep.Rows)
}

// TestMigrationFillsBodyAndMetadata: rows the projector wrote before
// migration 0012 get their body and metadata from their streams' first
// events, so no view shows them empty until a rebuild. The test empties
// the columns, as such rows were, and runs the migration's fill again.
func TestMigrationFillsBodyAndMetadata(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	r := e.do("POST", "/v1/orders", c.APIKey, map[string]any{"to": []string{sim.ExampleDelivered}, "body": "Old text",
		"metadata": map[string]any{"k": "v"}})
	require.Equal(t, 202, r.status, "%s", r.raw)
	orderID := r.body["order_id"].(string)
	e.caughtUp()
	ctx := context.Background()
	_, err := e.db.Pool.Exec(ctx, `UPDATE read_messages SET body = ''`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE read_orders SET metadata = NULL`)
	require.NoError(t, err)

	sql, err := os.ReadFile("../../../schema/migrations/0012_read_body_metadata.sql")
	require.NoError(t, err)
	fills := 0
	for _, stmt := range strings.Split(string(sql), ";") {
		if i := strings.Index(stmt, "UPDATE "); i >= 0 {
			_, err := e.db.Pool.Exec(ctx, stmt[i:])
			require.NoError(t, err)
			fills++
		}
	}
	require.Equal(t, 2, fills)
	var body string
	var meta []byte
	require.NoError(t, e.db.Pool.QueryRow(ctx, `SELECT m.body, o.metadata FROM read_messages m JOIN read_orders o USING (order_id)
WHERE order_id = $1`, orderID).Scan(&body, &meta))
	require.Equal(t, "Old text", body)
	require.JSONEq(t, `{"k":"v"}`, string(meta))
}
