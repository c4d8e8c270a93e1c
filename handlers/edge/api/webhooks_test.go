package api_test

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
)

// hookURL is a public address: the address rules let it through without
// DNS, and nothing is sent to it (no deliverer runs in these tests).
const hookURL = "https://93.184.216.34/hooks/afterok"

func (e *env) webhookEvents(id string) []eventstore.RecordedEvent {
	e.t.Helper()
	evs, err := e.store.ReadStream(context.Background(), domain.WebhookStream(id), 1)
	require.NoError(e.t, err)
	return evs
}

func TestWebhookEndpointsCreateListUpdateRotateDelete(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000)

	r := e.do("POST", "/v1/webhooks", c.APIKey, map[string]any{"url": hookURL, "event_types": []string{"MessageFailed", "MessageDelivered"},
		"description": "ops", "reason": "support asked"})
	require.Equal(t, 201, r.status, "%s", r.raw)
	require.Equal(t, "no-store", r.header.Get("Cache-Control"))
	id, secret := r.body["webhook_id"].(string), r.body["secret"].(string)
	require.True(t, strings.HasPrefix(secret, "whsec_"), secret)
	require.GreaterOrEqual(t, len(secret), len("whsec_")+32, "at least 24 random bytes")
	require.Equal(t, []any{"MessageDelivered", "MessageFailed"}, r.body["event_types"])
	require.Equal(t, true, r.body["enabled"])
	require.Nil(t, r.body["disabled_reason"])

	// Default subscription: every order and message event.
	all := e.do("POST", "/v1/webhooks", c.APIKey, map[string]any{"url": hookURL})
	require.Equal(t, 201, all.status, "%s", all.raw)
	require.ElementsMatch(t, domain.WebhookEventTypes(), all.body["event_types"])

	// Read and list never show a secret.
	got := e.do("GET", "/v1/webhooks/"+id, c.APIKey, nil)
	require.Equal(t, 200, got.status, "%s", got.raw)
	require.NotContains(t, got.body, "secret")
	list := e.do("GET", "/v1/webhooks?limit=1", c.APIKey, nil)
	require.Equal(t, 200, list.status, "%s", list.raw)
	require.Len(t, list.body["webhooks"], 1)
	require.NotContains(t, string(list.raw), secret[6:])
	next := list.body["next_cursor"].(string)
	list = e.do("GET", "/v1/webhooks?limit=1&cursor="+next, c.APIKey, nil)
	require.Len(t, list.body["webhooks"], 1)
	require.Equal(t, all.body["webhook_id"], list.body["webhooks"].([]any)[0].(map[string]any)["webhook_id"])
	require.Nil(t, list.body["next_cursor"])

	// Update: the whole new settings in an event with the key as actor.
	r = e.do("PATCH", "/v1/webhooks/"+id, c.APIKey, map[string]any{"enabled": false, "event_types": []string{"OrderCompleted"}, "reason": "maintenance"})
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.Equal(t, false, r.body["enabled"])
	require.Equal(t, []any{"OrderCompleted"}, r.body["event_types"])
	require.Equal(t, hookURL, r.body["url"])
	evs := e.webhookEvents(id)
	last := evs[len(evs)-1]
	require.Equal(t, "WebhookEndpointUpdated", last.Type)
	require.Equal(t, c.KeyID, last.Metadata.Actor)
	require.Equal(t, c.AccountID, last.AccountID)
	requireProblem(t, e.do("PATCH", "/v1/webhooks/"+id, c.APIKey, map[string]any{"event_types": []string{}}), 400, "invalid_request")
	requireProblem(t, e.do("PATCH", "/v1/webhooks/"+id, c.APIKey, map[string]any{"url": "https://10.0.0.1/x"}), 400, "invalid_request")

	// Rotation: a new secret, an event without it.
	r = e.do("POST", "/v1/webhooks/"+id+"/rotate-secret", c.APIKey, map[string]any{"reason": "leaked"})
	require.Equal(t, 200, r.status, "%s", r.raw)
	fresh := r.body["secret"].(string)
	require.NotEqual(t, secret, fresh)
	require.NotEmpty(t, r.body["previous_secret_expires_at"])
	var live int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_secrets WHERE webhook_id = $1
AND (expires_at IS NULL OR expires_at > now())`, id).Scan(&live))
	require.Equal(t, 2, live, "both sign during the overlap")

	// No event of the endpoint carries a secret.
	var raw string
	require.NoError(t, e.db.Pool.QueryRow(context.Background(), `SELECT string_agg(data::text || metadata::text, ' ') FROM events`).Scan(&raw))
	require.NotContains(t, raw, secret[6:])
	require.NotContains(t, raw, fresh[6:])

	// Delete: 204, then 404 everywhere.
	require.Equal(t, 204, e.do("DELETE", "/v1/webhooks/"+id, c.APIKey, map[string]any{"reason": "done"}).status)
	requireProblem(t, e.do("GET", "/v1/webhooks/"+id, c.APIKey, nil), 404, "not_found")
	requireProblem(t, e.do("DELETE", "/v1/webhooks/"+id, c.APIKey, nil), 404, "not_found")
	types := []string{}
	for _, ev := range e.webhookEvents(id) {
		types = append(types, ev.Type)
	}
	require.Equal(t, []string{"WebhookEndpointCreated", "WebhookEndpointUpdated", "WebhookSecretRotated", "WebhookEndpointDeleted"}, types)
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

// TestWebhookAddressRulesAtCreation: without allow-private, a URL that is
// not https or whose host is or resolves to a private address is refused,
// and nothing is written.
func TestWebhookAddressRulesAtCreation(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	before := e.eventCount()
	for _, u := range []string{"http://93.184.216.34/x", "https://127.0.0.1/x", "https://localhost:8443/x", "https://10.1.2.3/",
		"https://169.254.169.254/latest", "https://[::1]/", "https://[fd00:ec2::254]/", "https://[::ffff:192.168.0.1]/", "ftp://x", ""} {
		requireProblem(t, e.do("POST", "/v1/webhooks", c.APIKey, map[string]any{"url": u}), 400, "invalid_request")
	}
	requireProblem(t, e.do("POST", "/v1/webhooks", c.APIKey, map[string]any{"url": hookURL, "event_types": []string{"APIKeyIssued"}}), 400, "invalid_request")
	requireProblem(t, e.do("POST", "/v1/webhooks", c.APIKey, `{"url": 5}`), 400, "invalid_request")
	requireProblem(t, e.do("POST", "/v1/webhooks", c.APIKey, `{"url": "`+hookURL+`", "secret": "mine"}`), 400, "invalid_request")
	require.Equal(t, before, e.eventCount())
}

// TestWebhooksStayInTheirAccount: another account's endpoint is 404 on
// every route, and absent from the list; a key without the scope is 403.
func TestWebhooksStayInTheirAccount(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	a, b := e.account(1_000_000), e.account(1_000_000)
	ro := e.account(1_000_000, accounts.ScopeMessagesRead)
	r := e.do("POST", "/v1/webhooks", b.APIKey, map[string]any{"url": hookURL})
	require.Equal(t, 201, r.status, "%s", r.raw)
	theirs := r.body["webhook_id"].(string)
	before := e.eventCount()
	for _, rq := range []struct{ method, path, body string }{
		{"GET", "/v1/webhooks/" + theirs, ""}, {"PATCH", "/v1/webhooks/" + theirs, `{"enabled": false}`},
		{"DELETE", "/v1/webhooks/" + theirs, ""}, {"POST", "/v1/webhooks/" + theirs + "/rotate-secret", ""},
		{"GET", "/v1/webhooks/" + theirs + "/attempts", ""}, {"POST", "/v1/webhooks/" + theirs + "/replay", `{"since": "2020-01-01T00:00:00Z"}`},
		{"GET", "/v1/webhooks/nope", ""}, {"GET", "/v1/webhooks/" + strings.ToLower(theirs), ""},
	} {
		requireProblem(t, e.do(rq.method, rq.path, a.APIKey, rq.body), 404, "not_found")
	}
	list := e.do("GET", "/v1/webhooks", a.APIKey, nil)
	require.Equal(t, 200, list.status)
	require.Empty(t, list.body["webhooks"])
	requireProblem(t, e.do("GET", "/v1/webhooks", ro.APIKey, nil), 403, "forbidden")
	requireProblem(t, e.do("POST", "/v1/webhooks", "", map[string]any{"url": hookURL}), 401, "unauthenticated")
	require.Equal(t, before, e.eventCount())
	require.Equal(t, 200, e.do("GET", "/v1/webhooks/"+theirs, b.APIKey, nil).status, "the owner still sees it")
}

// webhookCases are TestEveryDocumentedResponse's requests of the webhook
// operations, one per documented response.
func webhookCases(t *testing.T, srv *httptest.Server, c, wo accounts.Created) []docCase {
	mk := func() string {
		t.Helper()
		rq := docCase{srv: srv, path: "/v1/webhooks", key: c.APIKey, body: `{"url":"` + hookURL + `"}`, status: 201, op: "post /v1/webhooks"}
		_, _, raw := rq.send(t)
		body := string(raw)
		i := strings.Index(body, `"webhook_id":"`)
		require.GreaterOrEqual(t, i, 0, body)
		return body[i+14 : i+14+26]
	}
	id, gone := mk(), mk()
	unknown := "/v1/webhooks/01ARZ3NDEKTSV4RRFFQ69G5FAV"
	var cases []docCase
	for _, op := range []struct {
		op, method, path, body, bad string
		status                      int
		missing                     string
	}{
		{"post /v1/webhooks", "", "/v1/webhooks", `{"url":"` + hookURL + `","event_types":["MessageDelivered"]}`, `{"url":"https://127.0.0.1/"}`, 201, ""},
		{"get /v1/webhooks", "", "/v1/webhooks?limit=1", "", "", 200, ""},
		{"get /v1/webhooks/{id}", "", "/v1/webhooks/" + id, "", "", 200, unknown},
		{"patch /v1/webhooks/{id}", "", "/v1/webhooks/" + id, `{"description":"ops"}`, `{"event_types":["Nope"]}`, 200, unknown},
		{"post /v1/webhooks/{id}/rotate-secret", "", "/v1/webhooks/" + id + "/rotate-secret", "", "", 200, unknown + "/rotate-secret"},
		{"get /v1/webhooks/{id}/attempts", "", "/v1/webhooks/" + id + "/attempts", "", "", 200, unknown + "/attempts"},
		{"post /v1/webhooks/{id}/replay", "", "/v1/webhooks/" + id + "/replay", `{"since":"2020-01-01T00:00:00Z"}`, `{"since":"yesterday"}`, 202, unknown + "/replay"},
		{"delete /v1/webhooks/{id}", "", "/v1/webhooks/" + gone, "", "", 204, unknown},
	} {
		base := docCase{op: op.op, srv: srv, path: op.path, key: c.APIKey, body: op.body}
		at := func(status int, key, path, body string) docCase {
			d := base
			d.status, d.key, d.path, d.body = status, key, path, body
			return d
		}
		cases = append(cases, at(401, "", op.path, op.body), at(403, wo.APIKey, op.path, op.body))
		switch {
		case op.bad != "":
			cases = append(cases, at(400, c.APIKey, op.path, op.bad))
		case op.op == "get /v1/webhooks":
			cases = append(cases, at(400, c.APIKey, "/v1/webhooks?limit=0", ""))
		case op.op == "get /v1/webhooks/{id}/attempts":
			cases = append(cases, at(400, c.APIKey, op.path+"?outcome=lost", ""))
		}
		if op.missing != "" {
			cases = append(cases, at(404, c.APIKey, op.missing, op.body))
		}
		cases = append(cases, at(op.status, c.APIKey, op.path, op.body))
	}
	return cases
}
