package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
)

// lastEvent returns an account stream's latest event.
func (e *env) lastEvent(accountID string) eventstore.RecordedEvent {
	e.t.Helper()
	evs, err := e.store.ReadStream(context.Background(), domain.AccountStream(accountID), 1)
	require.NoError(e.t, err)
	return evs[len(evs)-1]
}

func TestAdminOpensListsAndCreditsAccounts(t *testing.T) {
	e := newReadEnv(t)
	adm := e.account(1_000_000, accounts.ScopeAdmin)

	r := e.do("POST", "/v1/accounts", adm.APIKey, map[string]any{"name": "Globex", "credit_micros": 25_000_000,
		"countries": []string{"DE", "FR"}, "currency": "EUR"})
	require.Equal(t, 201, r.status, "%s", r.raw)
	id := r.body["account_id"].(string)
	key := r.body["api_key"].(string)
	require.Equal(t, "/v1/accounts/"+id, r.header.Get("Location"))
	require.ElementsMatch(t, accounts.DefaultScopes, r.body["scopes"])
	require.Equal(t, map[string]any{"amount_micros": 25_000_000.0, "currency": "EUR"}, r.body["balance"])
	own := e.do("GET", "/v1/account", key, nil)
	require.Equal(t, 200, own.status, "the first key works at once")
	require.Equal(t, []any{"DE", "FR"}, own.body["allowed_countries"])
	opened := e.store
	evs, err := opened.ReadStream(context.Background(), domain.AccountStream(id), 1)
	require.NoError(t, err)
	for _, ev := range evs {
		require.Equal(t, adm.KeyID, ev.Metadata.Actor, "%s names the admin key as its actor", ev.Type)
	}

	r = e.do("POST", "/v1/accounts/"+id+"/credits", adm.APIKey, map[string]any{"amount_micros": 5_000_000, "reason": "invoice 117 paid"})
	require.Equal(t, 201, r.status, "%s", r.raw)
	require.Equal(t, map[string]any{"amount_micros": 30_000_000.0, "currency": "EUR"}, r.body["balance"])
	require.Equal(t, "invoice 117 paid", r.body["reason"])
	last := e.lastEvent(id)
	require.Equal(t, "BalanceCredited", last.Type)
	require.Equal(t, adm.KeyID, last.Metadata.Actor)
	require.Equal(t, r.header.Get("X-Request-Id"), last.Metadata.CausationID)
	require.Equal(t, int64(30_000_000), e.balance(id).Balance)

	// The list: every account, a page at a time, with balances.
	e.caughtUp()
	seen := map[string]map[string]any{}
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 5)
		r := e.do("GET", "/v1/accounts?limit=1&cursor="+cursor, adm.APIKey, nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		list := r.body["accounts"].([]any)
		require.LessOrEqual(t, len(list), 1)
		for _, a := range list {
			a := a.(map[string]any)
			seen[a["account_id"].(string)] = a
		}
		next, _ := r.body["next_cursor"].(string)
		if next == "" {
			break
		}
		cursor = next
	}
	require.Len(t, seen, 2)
	require.Equal(t, map[string]any{"amount_micros": 30_000_000.0, "currency": "EUR"}, seen[id]["balance"])
	require.Equal(t, map[string]any{"amount_micros": 0.0, "currency": "EUR"}, seen[id]["reserved"])
	require.Equal(t, map[string]any{"amount_micros": 30_000_000.0, "currency": "EUR"}, seen[id]["credited"])
	requireProblem(t, e.do("GET", "/v1/accounts?cursor=nonsense", adm.APIKey, nil), 400, "invalid_request")
	// An admin reads any account; its owner reads its own, not another's.
	require.Equal(t, 200, e.do("GET", "/v1/accounts/"+id, adm.APIKey, nil).status)
	requireProblem(t, e.do("GET", "/v1/accounts/"+adm.AccountID, key, nil), 404, "not_found")
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

// TestAccountEndpointsNeedAdmin: a key with every other scope is 403 on
// each, and nothing is written.
func TestAccountEndpointsNeedAdmin(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000) // every scope but admin
	before := e.eventCount()
	requireProblem(t, e.do("GET", "/v1/accounts", c.APIKey, nil), 403, "forbidden")
	requireProblem(t, e.do("POST", "/v1/accounts", c.APIKey, map[string]any{"name": "x", "credit_micros": 1}), 403, "forbidden")
	requireProblem(t, e.do("POST", "/v1/accounts/"+c.AccountID+"/credits", c.APIKey,
		map[string]any{"amount_micros": 1_000_000, "reason": "free money"}), 403, "forbidden")
	requireProblem(t, e.do("POST", "/v1/accounts/"+c.AccountID+"/credits", "", nil), 401, "unauthenticated")
	require.Equal(t, before, e.eventCount())
	require.Equal(t, int64(1_000_000), e.balance(c.AccountID).Balance)
}

// TestCreditRefusesBadInput: every bad credit is a 400 problem naming
// what is wrong, never a 500, and nothing is written.
func TestCreditRefusesBadInput(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	adm := e.account(1_000_000, accounts.ScopeAdmin)
	c := e.account(1_000_000)
	path := "/v1/accounts/" + c.AccountID + "/credits"
	before := e.eventCount()
	for _, body := range []string{
		`{"amount_micros": 0, "reason": "x"}`,
		`{"amount_micros": -5, "reason": "x"}`,
		fmt.Sprintf(`{"amount_micros": %d, "reason": "x"}`, domain.MaxCreditMicros+1),
		`{"amount_micros": 9223372036854775807, "reason": "x"}`,
		`{"amount_micros": 9223372036854775808, "reason": "x"}`,
		`{"amount_micros": 1e400, "reason": "x"}`,
		`{"amount_micros": 1.5, "reason": "x"}`,
		`{"amount_micros": "100", "reason": "x"}`,
		`{"amount_micros": null, "reason": "x"}`,
		`{"reason": "x"}`,
		`{"amount_micros": 100}`,
		`{"amount_micros": 100, "reason": ""}`,
		`{"amount_micros": 100, "reason": "   "}`,
		`{"amount_micros": 100, "reason": "paid\u0000"}`,
		`{"amount_micros": 100, "reason": "paid \ud800"}`,
		`{"amount_micros": 100, "reason": "paid \udc00\ud800"}`,
		"{\"amount_micros\": 100, \"reason\": \"paid \xff\"}",
		`{"amount_micros": 100, "reason": "` + strings.Repeat("x", domain.MaxReasonLength+1) + `"}`,
		`{"amount_micros": 100, "reason": 7}`,
		`{"amount_micros": 100, "reason": "x", "reason": "y"}`,
		`{"amount_micros": 100, "reason": "x", "currency": "USD"}`,
		`[{"amount_micros": 100, "reason": "x"}]`,
		`{"amount_micros": 100, "reason": "x"`,
		`"credit"`,
		``,
		`{"amount_micros": 100, "reason": "x"} {}`,
	} {
		r := e.do("POST", path, adm.APIKey, body)
		requireProblem(t, r, 400, "invalid_request")
		require.NotContains(t, r.body["detail"], "internal", body)
	}
	requireProblem(t, e.do("POST", path, adm.APIKey, `{"amount_micros": 100, "reason": "`+strings.Repeat("x", 70<<10)+`"}`), 413, "too_large")
	require.Equal(t, before, e.eventCount(), "a refused credit wrote an event")
	require.Equal(t, int64(1_000_000), e.balance(c.AccountID).Balance)

	// Unknown accounts, ULID-shaped or not, are 404.
	for _, id := range []string{"01ARZ3NDEKTSV4RRFFQ69G5FAV", "nope", "01ARZ3NDEKTSV4RRFFQ69G5FA%00"} {
		requireProblem(t, e.do("POST", "/v1/accounts/"+id+"/credits", adm.APIKey, `{"amount_micros": 100, "reason": "x"}`), 404, "not_found")
	}
}

func TestOpenAccountRefusesBadInput(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	adm := e.account(1_000_000, accounts.ScopeAdmin)
	before := e.eventCount()
	for _, body := range []string{
		`{"credit_micros": 100}`,
		`{"name": "Acme"}`,
		`{"name": "", "credit_micros": 100}`,
		`{"name": "Ac\u0000me", "credit_micros": 100}`,
		`{"name": "Ac\ud800me", "credit_micros": 100}`,
		`{"name": "Acme", "credit_micros": 0}`,
		`{"name": "Acme", "credit_micros": 99999999999999999999}`,
		`{"name": "Acme", "credit_micros": 100, "scopes": ["root"]}`,
		`{"name": "Acme", "credit_micros": 100, "scopes": "admin"}`,
		`{"name": "Acme", "credit_micros": 100, "countries": ["de1"]}`,
		`{"name": "Acme", "credit_micros": 100, "currency": "EURO"}`,
		`{"name": "Acme", "credit_micros": 100, "owner": "me"}`,
	} {
		requireProblem(t, e.do("POST", "/v1/accounts", adm.APIKey, body), 400, "invalid_request")
	}
	require.Equal(t, before, e.eventCount())
}
