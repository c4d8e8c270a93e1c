package api_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/edge/api"
)

func TestKeysListIssueRevoke(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000)

	r := e.do("POST", "/v1/account/keys", c.APIKey, map[string]any{"scopes": []string{accounts.ScopeMessagesRead}, "reason": "for the support desk"})
	require.Equal(t, 201, r.status, "%s", r.raw)
	require.Equal(t, "no-store", r.header.Get("Cache-Control"))
	support, supportID := r.body["api_key"].(string), r.body["key_id"].(string)
	require.Equal(t, []any{accounts.ScopeMessagesRead}, r.body["scopes"])
	require.Equal(t, 200, e.do("GET", "/v1/account", support, nil).status, "the new key works")
	requireProblem(t, e.do("GET", "/v1/account/keys", support, nil), 403, "forbidden")

	// Without scopes a key gets its issuer's.
	r = e.do("POST", "/v1/account/keys", c.APIKey, nil)
	require.Equal(t, 201, r.status, "%s", r.raw)
	require.ElementsMatch(t, accounts.DefaultScopes, r.body["scopes"])
	spare := r.body["api_key"].(string)

	r = e.do("GET", "/v1/account/keys", c.APIKey, nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	keys := r.body["keys"].([]any)
	require.Len(t, keys, 3)
	for _, secret := range []string{c.APIKey, support, spare} {
		require.NotContains(t, string(r.raw), secret[len(secret)-20:], "a key's secret is listed")
	}
	require.NotContains(t, string(r.raw), "hash")
	first := keys[0].(map[string]any)
	require.Equal(t, c.KeyID, first["key_id"])
	require.True(t, strings.HasPrefix(c.APIKey, first["prefix"].(string)+"_"), "the prefix is the key's start")
	require.NotNil(t, first["last_used_at"], "the key in use has been used")
	require.NotContains(t, first, "revoked_at")

	// Revoke the support key, with a reason: an event, revoked_at, 401.
	r = e.do("DELETE", "/v1/account/keys/"+supportID, c.APIKey, map[string]any{"reason": "leaked in ticket 4411"})
	require.Equal(t, 204, r.status, "%s", r.raw)
	requireProblem(t, e.do("GET", "/v1/account", support, nil), 401, "unauthenticated")
	last := e.lastEvent(c.AccountID)
	require.Equal(t, "APIKeyRevoked", last.Type)
	require.Equal(t, c.KeyID, last.Metadata.Actor)
	ev, err := last.Decode()
	require.NoError(t, err)
	require.Equal(t, "leaked in ticket 4411", ev.(domain.APIKeyRevoked).Reason)
	require.Equal(t, supportID, ev.(domain.APIKeyRevoked).KeyID)
	r = e.do("GET", "/v1/account/keys", c.APIKey, nil)
	require.NotNil(t, r.body["keys"].([]any)[1].(map[string]any)["revoked_at"])
	// Revoking it again changes nothing.
	before := e.eventCount()
	require.Equal(t, 204, e.do("DELETE", "/v1/account/keys/"+supportID, c.APIKey, nil).status)
	require.Equal(t, before, e.eventCount())

	// A key may revoke itself; then it is refused.
	me := e.do("GET", "/v1/account/keys", spare, nil).body["keys"].([]any)[2].(map[string]any)["key_id"].(string)
	require.Equal(t, 204, e.do("DELETE", "/v1/account/keys/"+me, spare, nil).status)
	requireProblem(t, e.do("GET", "/v1/account/keys", spare, nil), 401, "unauthenticated")
	require.Equal(t, 200, e.do("GET", "/v1/account/keys", c.APIKey, nil).status)
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

// TestKeysStayInTheirAccount: another account's key is 404 to revoke and
// absent from the list; nothing is written.
func TestKeysStayInTheirAccount(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	a, b := e.account(1_000_000), e.account(1_000_000)
	before := e.eventCount()
	requireProblem(t, e.do("DELETE", "/v1/account/keys/"+b.KeyID, a.APIKey, nil), 404, "not_found")
	for _, id := range []string{"key_01arz3ndektsv4rrffq69g5fav", "nope", "key_", strings.ToUpper(b.KeyID)} {
		requireProblem(t, e.do("DELETE", "/v1/account/keys/"+id, a.APIKey, nil), 404, "not_found")
	}
	require.Equal(t, 200, e.do("GET", "/v1/account", b.APIKey, nil).status, "b's key still works")
	r := e.do("GET", "/v1/account/keys", a.APIKey, nil)
	require.Len(t, r.body["keys"], 1)
	require.NotContains(t, string(r.raw), b.KeyID)
	require.Equal(t, before, e.eventCount())
}

// TestKeysNeverEscalate: a key issues only scopes it holds (admin only
// when it is admin), revokes only keys whose scopes it holds, and a key
// without keys:manage can do neither.
func TestKeysNeverEscalate(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000, accounts.ScopeKeysManage, accounts.ScopeOrdersWrite)
	admin, err := e.accounts.IssueKey(context.Background(), c.AccountID, []string{accounts.ScopeAdmin}, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	ro := e.account(1_000_000, accounts.ScopeMessagesRead)
	before := e.eventCount()
	for _, scopes := range [][]string{{accounts.ScopeAdmin}, {accounts.ScopeMessagesRead}, {accounts.ScopeOrdersWrite, accounts.ScopeEventsRead}} {
		requireProblem(t, e.do("POST", "/v1/account/keys", c.APIKey, map[string]any{"scopes": scopes}), 403, "forbidden")
	}
	requireProblem(t, e.do("DELETE", "/v1/account/keys/"+admin.KeyID, c.APIKey, nil), 403, "forbidden")
	for _, body := range []string{`{"scopes": ["root"]}`, `{"scopes": "admin"}`, `{"scopes": []}` + "x", `{"scope": ["admin"]}`,
		`{"reason": "\u0000"}`, `{"reason": "\ud800"}`} {
		requireProblem(t, e.do("POST", "/v1/account/keys", c.APIKey, body), 400, "invalid_request")
	}
	requireProblem(t, e.do("DELETE", "/v1/account/keys/"+c.KeyID, c.APIKey, `{"reason": "\udfff"}`), 400, "invalid_request")
	for _, rq := range [][2]string{{"GET", "/v1/account/keys"}, {"POST", "/v1/account/keys"}, {"DELETE", "/v1/account/keys/" + ro.KeyID}} {
		requireProblem(t, e.do(rq[0], rq[1], ro.APIKey, nil), 403, "forbidden")
		requireProblem(t, e.do(rq[0], rq[1], "", nil), 401, "unauthenticated")
	}
	require.Equal(t, before, e.eventCount(), "a refused key action wrote an event")
	// The admin key may issue an admin key.
	r := e.do("POST", "/v1/account/keys", admin.APIKey, map[string]any{"scopes": []string{accounts.ScopeAdmin}})
	require.Equal(t, 201, r.status, "%s", r.raw)
}

// process is one API instance with its own pool, its own accounts
// service (and so its own key cache) and its own port: what a second
// `afterok serve --roles api` is to the database.
func process(t *testing.T, dsn string) *httptest.Server {
	t.Helper()
	pool, err := pgxpool.New(context.Background(), dsn)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := eventstore.New(pool)
	acceptor := orders.New(store, time.Now, orders.Config{})
	t.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: accounts.New(store, time.Now), Acceptor: acceptor,
		Policy: accept.DefaultPolicy(), Registry: prometheus.NewRegistry(), Logger: quiet}, api.Config{RateLimit: 10_000, RateBurst: 10_000})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// TestRevocationReachesTheOtherProcessWithinASecond revokes a key through
// process A while process B has it cached, and checks that every request
// B received more than accounts.KeyCacheTTL (the contract's second) after
// the revoke was sent got 401: B learns of it from nothing but its cache
// expiring, and the TTL bounds how long that takes.
func TestRevocationReachesTheOtherProcessWithinASecond(t *testing.T) {
	db := newEnv(t, api.Config{}, accept.DefaultPolicy()).db
	a, b := process(t, db.URL), process(t, db.URL)
	acct, err := accounts.New(eventstore.New(db.Pool), time.Now).Create(context.Background(), accounts.NewAccount{Name: "Acme",
		Credit: domain.Money{AmountMicros: 1_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	leaked, err := accounts.New(eventstore.New(db.Pool), time.Now).IssueKey(context.Background(), acct.AccountID, nil, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)

	get := func(srv *httptest.Server, key string) int {
		req, _ := http.NewRequest("GET", srv.URL+"/v1/account", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		res.Body.Close()
		return res.StatusCode
	}
	require.Equal(t, 200, get(b, leaked.APIKey), "B authenticates (and caches) the key")

	sent := time.Now()
	req, _ := http.NewRequest("DELETE", a.URL+"/v1/account/keys/"+leaked.KeyID, strings.NewReader(`{"reason":"leaked"}`))
	req.Header.Set("Authorization", "Bearer "+acct.APIKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	res.Body.Close()
	require.Equal(t, 204, res.StatusCode)
	require.Equal(t, 401, get(a, leaked.APIKey), "A refuses it at once")

	deadline := sent.Add(accounts.KeyCacheTTL)
	var after []string // what B answered to requests it got after the deadline
	for time.Now().Before(deadline.Add(500 * time.Millisecond)) {
		start := time.Now()
		status := get(b, leaked.APIKey)
		if start.After(deadline) {
			after = append(after, fmt.Sprintf("%s:%d", start.Sub(sent).Round(time.Millisecond), status))
			require.Equal(t, 401, status, "B still took the key %s after its revoke was sent", start.Sub(sent))
		}
		time.Sleep(20 * time.Millisecond) // a client's pace, not a wait for the result
	}
	require.NotEmpty(t, after, "no request reached B after the deadline (the machine is too slow to tell)")
	t.Logf("B after %s: %v", accounts.KeyCacheTTL, after)
}
