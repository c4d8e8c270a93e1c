package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestAccountEventsNewestFirst pages through an account's own stream from
// its newest event to its opening, each page older than the last, every
// version once; another account's stream is a 404 (unless the key is an
// admin's), and a cursor that is not one of ours a 400.
func TestAccountEventsNewestFirst(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	other := e.account(1_000_000)
	adm := e.account(1_000_000, accounts.AllScopes...)
	for i := range 3 {
		_, err := e.accounts.Credit(context.Background(), c.AccountID, int64(1000*(i+1)), accounts.Action{Actor: "test", Reason: fmt.Sprintf("top-up %d", i)})
		require.NoError(t, err)
	}
	for range 2 {
		r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered))
		require.Equal(t, 202, r.status, "%s", r.raw)
	}
	// opened + 3 credits + 2 reservations at least.
	type page struct {
		Events []struct {
			Version int    `json:"version"`
			Type    string `json:"type"`
			Stream  string `json:"stream"`
		} `json:"events"`
		NextCursor *string `json:"next_cursor"`
	}
	var versions []int
	var types []string
	path := "/v1/accounts/" + c.AccountID + "/events?limit=2"
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10, "paging does not end")
		r := e.do("GET", path, c.APIKey, nil)
		require.Equal(t, 200, r.status, "%s", r.raw)
		var p page
		require.NoError(t, json.Unmarshal(r.raw, &p))
		require.LessOrEqual(t, len(p.Events), 2)
		for _, ev := range p.Events {
			require.Equal(t, "account-"+c.AccountID, ev.Stream)
			versions = append(versions, ev.Version)
			types = append(types, ev.Type)
		}
		if p.NextCursor == nil {
			break
		}
		path = "/v1/accounts/" + c.AccountID + "/events?limit=2&cursor=" + *p.NextCursor
	}
	require.GreaterOrEqual(t, len(versions), 6, "%v", types)
	for i, v := range versions {
		require.Equal(t, len(versions)-i, v, "newest first, every version once: %v", versions)
	}
	require.Contains(t, types, "BalanceReserved")
	require.Contains(t, types, "BalanceCredited")

	require.Equal(t, 404, e.do("GET", "/v1/accounts/"+c.AccountID+"/events", other.APIKey, nil).status, "another account's stream")
	require.Equal(t, 404, e.do("GET", "/v1/accounts/01ARZ3NDEKTSV4RRFFQ69G5FAV/events", adm.APIKey, nil).status, "no such account")
	require.Equal(t, 200, e.do("GET", "/v1/accounts/"+c.AccountID+"/events", adm.APIKey, nil).status, "an admin reads any")
	for _, bad := range []string{"cursor=x", "cursor=1", "cursor=-5", "cursor=99999999999999999999", "limit=0", "limit=501"} {
		r := e.do("GET", "/v1/accounts/"+c.AccountID+"/events?"+bad, c.APIKey, nil)
		require.Equal(t, 400, r.status, "%s: %s", bad, r.raw)
	}
}
