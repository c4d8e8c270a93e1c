package api_test

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestRedrive: a failed message is re-driven once, with the key's id and
// the reason in its history; both views point at each other; the events
// endpoint shows MessageRedriven; a repeat is 409 already_redriven, a
// message that did not fail 409 not_redrivable; another account's
// message or order is 404 and changes nothing; messages:write is needed.
func TestRedrive(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	other := e.account(10_000_000)
	readOnly := e.account(10_000_000, accounts.ScopeMessagesRead, accounts.ScopeOrdersWrite, accounts.ScopeEventsRead)
	orderID, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered)
	e.advance(ids[0], queue, route("sim-a"), submit, failWith("undeliverable", "delivery"))
	e.advance(ids[1], queue, failWith("no_route", "routing"))
	e.advance(ids[2], queue, route("sim-a"), submit, deliver)
	reason := map[string]any{"reason": "the carrier's outage is over"}

	// Isolation and scope: nothing happens, and nothing says it exists.
	for _, path := range []string{"/v1/messages/" + ids[0] + "/redrive", "/v1/orders/" + orderID + "/redrive"} {
		requireProblem(t, e.do("POST", path, other.APIKey, reason), 404, "not_found")
		requireProblem(t, e.do("POST", path, readOnly.APIKey, reason), 403, "forbidden")
		requireProblem(t, e.do("POST", path, c.APIKey, nil), 400, "invalid_request")
		requireProblem(t, e.do("POST", path, c.APIKey, `{"reason":"x","extra":1}`), 400, "invalid_request")
		requireProblem(t, e.do("POST", path, c.APIKey, `{"reason":"  "}`), 400, "invalid_request")
		requireProblem(t, e.do("POST", path, c.APIKey, `{"reason":"x","failure_codes":["Not A Code"]}`), 400, "invalid_request")
		r := e.do("POST", path, c.APIKey, `{"reason":"x","dry_run":"yes"}`)
		requireProblem(t, r, 400, "invalid_request")
		require.Equal(t, "dry_run must be true or false", r.body["detail"])
		r = e.do("POST", path, c.APIKey, `{"reason":"x","failure_codes":[1]}`)
		requireProblem(t, r, 400, "invalid_request")
		require.Equal(t, "failure_codes must be an array of failure codes (strings)", r.body["detail"])
		r = e.do("POST", path, c.APIKey, `{"reason":7}`)
		requireProblem(t, r, 400, "invalid_request")
		require.Equal(t, "reason must be a string", r.body["detail"])
	}
	// Another account's message or order gets the very answer a missing one gets.
	missing := "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	for _, p := range []struct{ foreign, absent, id string }{
		{"/v1/messages/" + ids[0] + "/redrive", "/v1/messages/" + missing + "/redrive", ids[0]},
		{"/v1/orders/" + orderID + "/redrive", "/v1/orders/" + missing + "/redrive", orderID},
	} {
		foreign, absent := e.do("POST", p.foreign, other.APIKey, reason), e.do("POST", p.absent, other.APIKey, reason)
		requireProblem(t, absent, 404, "not_found")
		require.Equal(t, absent.body["detail"], strings.ReplaceAll(foreign.body["detail"].(string), p.id, missing))
	}
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[2]+"/redrive", c.APIKey, reason), 409, "not_redrivable")
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[3]+"/redrive", c.APIKey, reason), 409, "not_redrivable")
	recs, err := e.store.ReadStream(context.Background(), domain.MessageStream(ids[0]), 1)
	require.NoError(t, err)
	require.Len(t, recs, 5, "a refused re-drive appended something")

	// A dry run counts and writes nothing.
	before := e.eventCount()
	r := e.do("POST", "/v1/orders/"+orderID+"/redrive", c.APIKey, map[string]any{"reason": "x", "dry_run": true})
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.EqualValues(t, map[string]any{"redrivable": 2.0, "already_redriven": 0.0, "not_redrivable": 2.0}, r.body)
	require.Equal(t, before, e.eventCount())

	balance := e.balance(c.AccountID).Balance
	r = e.do("POST", "/v1/messages/"+ids[0]+"/redrive", c.APIKey, reason)
	require.Equal(t, 202, r.status, "%s", r.raw)
	newOrder := r.body["order_id"].(string)
	require.Equal(t, "/v1/orders/"+newOrder, r.header.Get("Location"))
	require.EqualValues(t, 1, r.body["redriven"])
	copies := r.body["messages"].([]any)
	require.Len(t, copies, 1)
	cp := copies[0].(map[string]any)
	require.Equal(t, ids[0], cp["redrive_of"])
	copyID := cp["message_id"].(string)
	price := r.body["price"].(map[string]any)["amount_micros"].(float64)
	require.Positive(t, price)
	require.Equal(t, balance-int64(price), e.balance(c.AccountID).Balance, "the copy is reserved anew")
	requireProblem(t, e.do("POST", "/v1/messages/"+ids[0]+"/redrive", c.APIKey, reason), 409, "already_redriven")

	// The history, with who and why.
	recs, err = e.store.ReadStream(context.Background(), domain.MessageStream(ids[0]), 1)
	require.NoError(t, err)
	last := recs[len(recs)-1]
	ev, err := last.Decode()
	require.NoError(t, err)
	require.Equal(t, domain.MessageRedriven{RedrivenAs: copyID, OrderID: newOrder, Actor: c.KeyID, Reason: "the carrier's outage is over",
		At: ev.(domain.MessageRedriven).At}, ev)
	require.Equal(t, c.KeyID, last.Metadata.Actor)
	require.Equal(t, orderID, last.Metadata.CorrelationID)

	e.caughtUp()
	orig := e.get("/v1/messages/"+ids[0], c.APIKey)
	require.Equal(t, "failed", orig.body["state"], "the original stays failed")
	require.Equal(t, copyID, orig.body["redriven_as"], "%s", orig.raw)
	require.Nil(t, orig.body["redrive_of"])
	dup := e.get("/v1/messages/"+copyID, c.APIKey)
	require.Equal(t, ids[0], dup.body["redrive_of"], "%s", dup.raw)
	require.Equal(t, newOrder, dup.body["order_id"])
	require.Equal(t, "accepted", dup.body["state"])
	require.Nil(t, dup.body["redriven_as"])
	hist := e.get("/v1/messages/"+ids[0]+"/events", c.APIKey)
	evs := hist.body["events"].([]any)
	require.Equal(t, "MessageRedriven", evs[len(evs)-1].(map[string]any)["type"], "%s", hist.raw)
	require.Equal(t, "valid", hist.body["hash_chain"])
	// Another account sees neither.
	require.Equal(t, 404, e.do("GET", "/v1/messages/"+copyID, other.APIKey, nil).status)
	require.Equal(t, 404, e.do("GET", "/v1/orders/"+newOrder, other.APIKey, nil).status)

	// The order's re-drive takes what is left: the no_route one.
	r = e.do("POST", "/v1/orders/"+orderID+"/redrive", c.APIKey, map[string]any{"reason": "route table fixed", "failure_codes": []string{"no_route"}})
	require.Equal(t, 202, r.status, "%s", r.raw)
	require.EqualValues(t, 1, r.body["redriven"])
	require.EqualValues(t, 1, r.body["already_redriven"])
	require.EqualValues(t, 2, r.body["not_redrivable"])
	require.Equal(t, ids[1], r.body["messages"].([]any)[0].(map[string]any)["redrive_of"])
	requireProblem(t, e.do("POST", "/v1/orders/"+orderID+"/redrive", c.APIKey, reason), 409, "not_redrivable")
}

// TestListOrders: the account's orders newest first, each as GET
// /v1/orders/{id} shows it, paged, filtered by state and time; another
// account's orders never appear; bad filters are 400 naming the field.
func TestListOrders(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	other := e.account(10_000_000)
	var placed []string
	var firstIDs []string
	for range 5 {
		id, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered)
		placed = append(placed, id)
		firstIDs = append(firstIDs, ids[0])
	}
	otherOrder, _ := e.placeOrder(other.APIKey, sim.ExampleDelivered)
	e.advance(firstIDs[1], queue) // executing
	e.caughtUp()

	// Newest first, two a page, every order once.
	var seen []string
	path := "/v1/orders?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		r := e.get(path, c.APIKey)
		for _, o := range r.body["orders"].([]any) {
			seen = append(seen, o.(map[string]any)["order_id"].(string))
		}
		next, _ := r.body["next_cursor"].(string)
		if next == "" {
			break
		}
		path = "/v1/orders?limit=2&cursor=" + url.QueryEscape(next)
	}
	require.Equal(t, []string{placed[4], placed[3], placed[2], placed[1], placed[0]}, seen)
	require.NotContains(t, seen, otherOrder)

	// A summary is exactly GET /v1/orders/{id}'s.
	one := e.get("/v1/orders?limit=1&state=executing", c.APIKey)
	list := one.body["orders"].([]any)
	require.Len(t, list, 1, "%s", one.raw)
	require.Equal(t, e.get("/v1/orders/"+placed[1], c.APIKey).body, list[0])
	require.Nil(t, one.body["next_cursor"])

	accepted := e.get("/v1/orders?state=accepted", c.APIKey).body["orders"].([]any)
	require.Len(t, accepted, 4)
	require.Empty(t, e.get("/v1/orders?state=completed", c.APIKey).body["orders"])

	first := e.get("/v1/orders/"+placed[0], c.APIKey)
	at := first.body["timestamps"].(map[string]any)["accepted_at"].(string)
	until := e.get("/v1/orders?until="+url.QueryEscape(at), c.APIKey).body["orders"].([]any)
	require.Empty(t, until, "until is exclusive")
	since := e.get("/v1/orders?since="+url.QueryEscape(at), c.APIKey).body["orders"].([]any)
	require.Len(t, since, 5)
	after, err := time.Parse(time.RFC3339Nano, at)
	require.NoError(t, err)
	later := e.get("/v1/orders?since="+url.QueryEscape(after.Add(time.Microsecond).Format(time.RFC3339Nano)), c.APIKey).body["orders"].([]any)
	require.Len(t, later, 4)

	// The other account sees only its own.
	mine := e.get("/v1/orders", other.APIKey).body["orders"].([]any)
	require.Len(t, mine, 1)
	require.Equal(t, otherOrder, mine[0].(map[string]any)["order_id"])
	requireProblem(t, e.do("GET", "/v1/orders?account_id="+c.AccountID, other.APIKey, nil), 403, "forbidden")

	for _, bad := range []string{"state=done", "state=failed", "since=yesterday", "until=2026-13-01", "limit=0", "limit=501", "cursor=abc",
		fmt.Sprintf("cursor=%s", url.QueryEscape("dGVzdA"))} {
		r := e.do("GET", "/v1/orders?"+bad, c.APIKey, nil)
		requireProblem(t, r, 400, "invalid_request")
	}
	requireProblem(t, e.do("GET", "/v1/orders", e.account(1, accounts.ScopeOrdersWrite).APIKey, nil), 403, "forbidden")
}
