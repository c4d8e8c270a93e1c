package api_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestReadEndpointsFollowTheLifecycle reads an order and its messages at
// each step of the pipeline.
func TestReadEndpointsFollowTheLifecycle(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	orderID, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleRejected, sim.ExampleFailover)

	// Straight after 202 the order reads as accepted, projected or not.
	r := e.get("/v1/orders/"+orderID, c.APIKey)
	require.Equal(t, "accepted", r.body["state"])
	require.EqualValues(t, 3, r.body["message_count"])
	require.Equal(t, map[string]any{"accepted": 3.0, "queued": 0.0, "routed": 0.0, "submitted": 0.0, "delivered": 0.0, "failed": 0.0, "expired": 0.0, "scheduled": 0.0, "canceled": 0.0}, r.body["counts"])
	require.Equal(t, map[string]any{"amount_micros": 225000.0, "currency": "EUR"}, r.body["price"])
	m := e.get("/v1/messages/"+ids[0], c.APIKey)
	require.Equal(t, "accepted", m.body["state"])

	e.advance(ids[0], queue, route("sim-a"), submit)
	e.advance(ids[1], queue, route("sim-a"), failWith(domain.CodeInvalidDestination, domain.StageSubmit))
	e.advance(ids[2], queue, route("sim-a"), retryWith(domain.CodeProviderUnavailable, domain.StageSubmit))
	e.caughtUp()

	r = e.get("/v1/orders/"+orderID, c.APIKey)
	require.Equal(t, "executing", r.body["state"])
	require.Equal(t, map[string]any{"accepted": 0.0, "queued": 1.0, "routed": 0.0, "submitted": 1.0, "delivered": 0.0, "failed": 1.0, "expired": 0.0, "scheduled": 0.0, "canceled": 0.0}, r.body["counts"])
	require.NotNil(t, r.body["timestamps"].(map[string]any)["started_at"])
	require.Nil(t, r.body["timestamps"].(map[string]any)["completed_at"])

	m = e.get("/v1/messages/"+ids[0], c.APIKey)
	require.Equal(t, "submitted", m.body["state"])
	require.EqualValues(t, 1, m.body["attempt"])
	require.Equal(t, map[string]any{"route_id": "de", "provider": "sim-a", "reason": "first healthy by priority"}, m.body["route"])
	require.Equal(t, "sim-a-1-"+ids[0][18:], m.body["provider_message_id"])
	require.Nil(t, m.body["failure"])
	ts := m.body["timestamps"].(map[string]any)
	for _, k := range []string{"accepted_at", "queued_at", "routed_at", "submitted_at"} {
		require.NotNil(t, ts[k], k)
	}
	require.Nil(t, ts["delivered_at"])

	m = e.get("/v1/messages/"+ids[1], c.APIKey)
	require.Equal(t, "failed", m.body["state"])
	require.Equal(t, map[string]any{"code": "invalid_destination", "reason": "test invalid_destination", "stage": "submit",
		"permanent": true, "provider": "sim-a"}, m.body["failure"])

	m = e.get("/v1/messages/"+ids[2], c.APIKey)
	require.Equal(t, "queued", m.body["state"], "a waiting retry reads as queued")
	require.EqualValues(t, 2, m.body["attempt"])

	// The history straight from the store.
	h := e.get("/v1/messages/"+ids[2]+"/events", c.APIKey)
	require.Equal(t, "valid", h.body["hash_chain"])
	evs := h.body["events"].([]any)
	var types []string
	for i, raw := range evs {
		ev := raw.(map[string]any)
		types = append(types, ev["type"].(string))
		require.EqualValues(t, i+1, ev["version"])
		require.Positive(t, ev["position"])
		require.NotEmpty(t, ev["recorded_at"])
		require.Equal(t, orderID, ev["metadata"].(map[string]any)["correlation_id"])
		require.NotEmpty(t, ev["data"])
	}
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted", "MessageRetried"}, types)

	e.advance(ids[0], deliver)
	e.advance(ids[2], queue, route("sim-b"), submit, deliver)
	e.caughtUp()
	r = e.get("/v1/orders/"+orderID, c.APIKey)
	require.Equal(t, map[string]any{"accepted": 0.0, "queued": 0.0, "routed": 0.0, "submitted": 0.0, "delivered": 2.0, "failed": 1.0, "expired": 0.0, "scheduled": 0.0, "canceled": 0.0}, r.body["counts"])
	require.Equal(t, "executing", r.body["state"], "completed only once OrderCompleted is recorded")

	acct := e.get("/v1/accounts/"+c.AccountID, c.APIKey)
	require.Equal(t, map[string]any{"amount_micros": 10_000_000.0 - 225000, "currency": "EUR"}, acct.body["balance"])
	require.Equal(t, map[string]any{"amount_micros": 225000.0, "currency": "EUR"}, acct.body["reserved"])

	admin := e.account(1, accounts.ScopeAdmin)
	stats := e.get("/v1/providers/stats", admin.APIKey)
	providers := stats.body["providers"].([]any)
	require.Len(t, providers, 2)
	simA := providers[0].(map[string]any)
	require.Equal(t, "sim-a", simA["provider"])
	require.EqualValues(t, 1, simA["delivered"])
	require.EqualValues(t, 1, simA["failed"])
	require.EqualValues(t, 1, simA["retried"])
	requireProblem(t, e.do("GET", "/v1/providers/stats", c.APIKey, nil), 403, "forbidden")

	requireProblem(t, e.do("GET", "/v1/messages/"+ids[0]+"?as_of=yesterday", c.APIKey, nil), 400, "invalid_request")
	requireProblem(t, e.do("GET", "/v1/orders/"+orderID+"/messages?state=lost", c.APIKey, nil), 400, "invalid_request")
	requireProblem(t, e.do("GET", "/v1/orders/"+orderID+"/messages?cursor=bm9wZQ", c.APIKey, nil), 400, "invalid_request")
	requireProblem(t, e.do("GET", "/v1/messages?limit=0", c.APIKey, nil), 400, "invalid_request")
	requireProblem(t, e.do("GET", "/v1/events?type=MessageLost", c.APIKey, nil), 400, "invalid_request")
}

// TestMessageEventsReportABrokenChain: an altered event turns the history's
// hash_chain to broken.
func TestMessageEventsReportABrokenChain(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	_, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered)
	e.advance(ids[0], queue, route("sim-a"))
	require.Equal(t, "valid", e.get("/v1/messages/"+ids[0]+"/events", c.APIKey).body["hash_chain"])
	ctx := context.Background()
	_, err := e.db.Pool.Exec(ctx, `ALTER TABLE events DISABLE TRIGGER events_immutable`)
	require.NoError(t, err)
	_, err = e.db.Pool.Exec(ctx, `UPDATE events SET data = jsonb_set(data, '{attempt}', '7') WHERE stream_id = $1 AND stream_version = 2`,
		domain.MessageStream(ids[0]))
	require.NoError(t, err)
	h := e.get("/v1/messages/"+ids[0]+"/events", c.APIKey)
	require.Equal(t, "broken", h.body["hash_chain"])
	require.Contains(t, h.body["problems"].([]any)[0], "v2: hash does not match")
}

// TestReadIsolation runs every read endpoint with a second account's key
// against the first account's ids, filters and streams: each answer is
// exactly what a missing resource gets, or an empty list.
func TestReadIsolation(t *testing.T) {
	e := newReadEnv(t)
	a := e.account(10_000_000)
	b := e.account(10_000_000)
	admin := e.account(1, accounts.ScopeAdmin)
	orderA, idsA := e.placeOrder(a.APIKey, sim.ExampleDelivered, sim.ExampleRejected)
	orderB, idsB := e.placeOrder(b.APIKey, sim.ExampleDelivered)
	e.advance(idsA[0], queue, route("sim-a"), submit, deliver)
	e.advance(idsB[0], queue)
	e.caughtUp()
	var positionA float64
	for _, ev := range e.get("/v1/events", a.APIKey).body["events"].([]any) {
		positionA = ev.(map[string]any)["position"].(float64)
	}
	missing := "01JZZZZZZZZZZZZZZZZZZZZZZZ"

	// Every resource path: B gets the very answer a missing id gets.
	resources := []struct{ foreign, absent string }{
		{"/v1/orders/" + orderA, "/v1/orders/" + missing},
		{"/v1/orders/" + orderA + "/messages", "/v1/orders/" + missing + "/messages"},
		{"/v1/orders/" + orderA + "/messages?state=delivered", "/v1/orders/" + missing + "/messages?state=delivered"},
		{"/v1/messages/" + idsA[0], "/v1/messages/" + missing},
		{"/v1/messages/" + idsA[0] + "?as_of=" + url.QueryEscape(time.Now().Format(time.RFC3339Nano)), "/v1/messages/" + missing + "?as_of=" + url.QueryEscape(time.Now().Format(time.RFC3339Nano))},
		{"/v1/messages/" + idsA[0] + "/events", "/v1/messages/" + missing + "/events"},
		{"/v1/accounts/" + a.AccountID, "/v1/accounts/" + missing},
	}
	for _, res := range resources {
		foreign, absent := e.do("GET", res.foreign, b.APIKey, nil), e.do("GET", res.absent, b.APIKey, nil)
		requireProblem(t, foreign, 404, "not_found")
		requireProblem(t, absent, 404, "not_found")
		asMissing := strings.NewReplacer(orderA, missing, idsA[0], missing, a.AccountID, missing)
		require.Equal(t, absent.body["title"], foreign.body["title"])
		require.Equal(t, absent.body["detail"], asMissing.Replace(foreign.body["detail"].(string)),
			"the answer for %s tells it apart from a missing one", res.foreign)
		// The admin key reads across accounts.
		require.Equal(t, 200, e.do("GET", res.foreign, admin.APIKey, nil).status, res.foreign)
	}

	// Lists: B's search never shows A's rows, whatever the filter.
	for _, q := range []string{"", "?order_id=" + orderA, "?to=" + url.QueryEscape(sim.ExampleDelivered), "?state=delivered",
		"?state=accepted", "?since=2000-01-01T00:00:00Z", "?to=" + strings.TrimPrefix(sim.ExampleRejected, "+")} {
		r := e.get("/v1/messages"+q, b.APIKey)
		for _, m := range r.body["messages"].([]any) {
			require.Equal(t, b.AccountID, m.(map[string]any)["account_id"], "search %q leaked", q)
			require.Equal(t, orderB, m.(map[string]any)["order_id"])
		}
	}
	require.Len(t, e.get("/v1/messages?order_id="+orderA, b.APIKey).body["messages"], 0)
	require.Len(t, e.get("/v1/messages?to="+url.QueryEscape(sim.ExampleDelivered), b.APIKey).body["messages"], 1, "B's own message to the same number")
	requireProblem(t, e.do("GET", "/v1/messages?account_id="+a.AccountID, b.APIKey, nil), 403, "forbidden")
	require.Len(t, e.get("/v1/messages?account_id="+a.AccountID, admin.APIKey).body["messages"], 2)
	// The order listing likewise: B sees its own order only, whatever the filter.
	for _, q := range []string{"", "?state=accepted", "?state=executing", "?since=2000-01-01T00:00:00Z", "?limit=1"} {
		list := e.get("/v1/orders"+q, b.APIKey).body["orders"].([]any)
		for _, o := range list {
			require.Equal(t, orderB, o.(map[string]any)["order_id"], "listing %q leaked", q)
		}
	}
	require.Len(t, e.get("/v1/orders", b.APIKey).body["orders"], 1)
	requireProblem(t, e.do("GET", "/v1/orders?account_id="+a.AccountID, b.APIKey, nil), 403, "forbidden")
	require.Len(t, e.get("/v1/orders?account_id="+a.AccountID, admin.APIKey).body["orders"], 1)

	// Pull: only B's events; A's positions are not a place to resume from.
	pulled := e.get("/v1/events?limit=1000", b.APIKey).body["events"].([]any)
	require.NotEmpty(t, pulled)
	for _, ev := range pulled {
		md := ev.(map[string]any)["metadata"].(map[string]any)
		require.Equal(t, b.AccountID, md["account_id"])
	}
	require.Empty(t, e.get("/v1/events?order_id="+orderA, b.APIKey).body["events"])
	foreignAfter := e.do("GET", "/v1/events?after="+jsonNumber(positionA), b.APIKey, nil)
	absentAfter := e.do("GET", "/v1/events?after=999999999", b.APIKey, nil)
	requireProblem(t, foreignAfter, 400, "invalid_request")
	require.Equal(t, absentAfter.body["detail"], strings.Replace(foreignAfter.body["detail"].(string), jsonNumber(positionA), "999999999", 1))
	requireProblem(t, e.do("GET", "/v1/events?account_id="+a.AccountID, b.APIKey, nil), 403, "forbidden")

	// Stream: B's stream carries B's events only, and A's order filter
	// yields nothing but heartbeats.
	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", b.APIKey, "0")
	for range len(pulled) {
		ev := s.next(t, 10*time.Second)
		require.Equal(t, b.AccountID, ev.data["metadata"].(map[string]any)["account_id"])
	}
	s.close()
	s = openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1&order_id="+orderA, b.APIKey, "")
	s.waitHeartbeat(t, 10*time.Second)
	require.Zero(t, s.received(), "an event of A reached B's stream")
	s.close()
	r := e.do("GET", "/v1/events/stream", b.APIKey, nil, "Last-Event-ID", jsonNumber(positionA))
	requireProblem(t, r, 400, "invalid_request")
}

func jsonNumber(f float64) string { b, _ := json.Marshal(f); return string(b) }

// TestReadyzShowsProjectionLag: /readyz reports each projection's lag and
// so do the runner's metrics, and neither makes the API unready.
func TestReadyzShowsProjectionLag(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	e.caughtUp()
	e.stop() // the projector is down
	_, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered)
	e.advance(ids[0], queue)
	r := e.get("/readyz", "")
	require.Equal(t, "ready", r.body["status"], "a lagging read side does not make the API unready")
	lag := r.body["projections"].(map[string]any)["messages"].(map[string]any)
	require.EqualValues(t, 4, lag["events_behind"], "OrderAccepted, two MessageAccepted and MessageQueued")
	require.Positive(t, lag["seconds_behind"])

	e.project()
	e.caughtUp()
	lag = e.get("/readyz", "").body["projections"].(map[string]any)["messages"].(map[string]any)
	require.EqualValues(t, 0, lag["events_behind"])
	require.EqualValues(t, 0, lag["seconds_behind"])
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		families, err := e.registry.Gather()
		require.NoError(t, err)
		var seen []string
		for _, f := range families {
			seen = append(seen, f.GetName())
		}
		ok := slices.Contains(seen, "afterok_projection_lag_events") && slices.Contains(seen, "afterok_projection_lag_seconds") &&
			slices.Contains(seen, "afterok_projection_delay_seconds") && slices.Contains(seen, "afterok_projection_events_applied_total")
		return ok, strings.Join(seen, " ")
	})
}
