package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestRevocationEndsOpenStreams opens an event stream with a key, revokes
// the key while the stream is open and the account keeps moving, and
// requires the stream to end within streamEndBound with a `revoked`
// record, having delivered nothing of what followed the revocation:
//   - through the server that holds the stream (which drops the key from
//     its cache),
//   - through another server process on the same database (whose
//     revocation the streaming process sees only in the store),
//   - in the database alone, revoked_at set without an event, which only
//     the live tail's sweep of its streams' keys can notice, and
//   - of an admin key streaming another account, whose revocation is on
//     its own account's stream, which the stream does not read.
//
// The last two are not ordered by the tail, so for them only the end is
// checked: the sweep's period bounds what they may still send.
func TestRevocationEndsOpenStreams(t *testing.T) {
	// The contract's second (accounts.KeyCacheTTL), a look-up period and
	// a slow machine's slack.
	const streamEndBound = 2500 * time.Millisecond
	for _, tc := range []struct {
		name string
		// other: the stream is held by a second process; inDatabase: the
		// key is revoked with an UPDATE, no event; admin: the key is
		// another account's admin key.
		other, inDatabase, admin bool
	}{
		{name: "same process"},
		{name: "other process", other: true},
		{name: "in the database alone", other: true, inDatabase: true},
		{name: "admin key of another account", other: true, admin: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
			c := e.account(1_000_000_000)
			owner, scopes, path := c, []string{accounts.ScopeEventsRead}, "/v1/events/stream?heartbeat=1"
			if tc.admin {
				owner, scopes, path = e.account(1_000_000), []string{accounts.ScopeAdmin}, path+"&account_id="+c.AccountID
			}
			reader, err := e.accounts.IssueKey(context.Background(), owner.AccountID, scopes, nil, accounts.Action{Actor: "cli:test"})
			require.NoError(t, err)
			if tc.admin {
				owner.APIKey = reader.APIKey // only an admin key revokes an admin key: itself
			}
			holder := e.srv
			if tc.other {
				holder = process(t, e.db.URL)
			}
			s := openStream(t, holder.URL+path, reader.APIKey, "")
			s.waitHeartbeat(t, 10*time.Second) // it has joined the live tail: it starts at the present
			before := placeOrder(t, e, c.APIKey)
			ev := s.next(t, 10*time.Second)
			require.Equal(t, before, ev.data["metadata"].(map[string]any)["correlation_id"], "the stream is live before the revocation")

			revoked := time.Now()
			if tc.inDatabase {
				_, err := e.db.Pool.Exec(context.Background(), `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`, reader.KeyID)
				require.NoError(t, err)
			} else {
				r := e.do("DELETE", "/v1/account/keys/"+reader.KeyID, owner.APIKey, map[string]any{"reason": "leaked"})
				require.Equal(t, 204, r.status, "%s", r.raw)
			}
			after := placeOrder(t, e, c.APIKey)

			select {
			case <-s.ended:
			case <-time.After(time.Until(revoked.Add(streamEndBound))):
				t.Fatalf("the stream of a revoked key is still open %s after the revocation", time.Since(revoked).Round(time.Millisecond))
			}
			t.Logf("the stream ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
			select {
			case last := <-s.control:
				require.Equal(t, "revoked", last.typ)
				require.Equal(t, "unauthenticated", last.data["code"])
			default:
				t.Fatal("the stream ended without a revoked record")
			}
			if !tc.inDatabase && !tc.admin {
				// What follows the revocation in the tail's order.
				rows, err := e.db.Pool.Query(context.Background(), `SELECT global_position::text FROM events
WHERE account_id = $1 AND (xid, global_position) > (SELECT xid, global_position FROM events WHERE account_id = $1 AND type = 'APIKeyRevoked')`, c.AccountID)
				require.NoError(t, err)
				later, err := pgx.CollectRows(rows, pgx.RowTo[string])
				require.NoError(t, err)
				require.NotEmpty(t, later, "the order placed after the revocation follows it in the tail")
				for len(s.events) > 0 {
					ev := <-s.events
					require.NotEqual(t, after, ev.data["metadata"].(map[string]any)["correlation_id"], "an event after the revocation reached the stream: %+v", ev)
					require.NotContains(t, later, ev.id, "an event after the revocation reached the stream: %+v", ev)
				}
			}
		})
	}
}

// placeOrder posts a one-message order through e and returns its id.
func placeOrder(t *testing.T, e *env, key string) string {
	t.Helper()
	r := e.do("POST", "/v1/orders", key, order(sim.ExampleDelivered))
	require.Equal(t, 202, r.status, "%s", r.raw)
	return r.body["order_id"].(string)
}

// TestRevocationDuringCatchUpEndsTheStream revokes a resuming stream's key
// while it reads the account's history from the store, before it joins
// the live tail, and appends an order after the revocation: the catch-up
// must end the stream at the revocation, sending none of that order.
func TestRevocationDuringCatchUpEndsTheStream(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000_000)
	reader, err := e.accounts.IssueKey(context.Background(), c.AccountID, []string{accounts.ScopeEventsRead}, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	before := placeOrder(t, e, c.APIKey)
	var revoked time.Time
	var after string
	hookErr := make(chan error, 1)
	e.api.SetBeforeAttach(func() {
		// On the stream's own goroutine: no require here.
		revoked = time.Now()
		err := e.accounts.RevokeKey(context.Background(), c.AccountID, reader.KeyID, nil, accounts.Action{Actor: "cli:test", Reason: "leaked"})
		if err == nil {
			after, err = e.acceptOne(c.APIKey)
		}
		hookErr <- err
	})
	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1&after=0", reader.APIKey, "")
	select {
	case <-s.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the stream of a key revoked during its catch-up is still open")
	}
	require.NoError(t, <-hookErr)
	t.Logf("the stream ended %s after the revocation", time.Since(revoked).Round(time.Millisecond))
	select {
	case last := <-s.control:
		require.Equal(t, "revoked", last.typ)
	default:
		t.Fatal("the stream ended without a revoked record")
	}
	var history int
	for len(s.events) > 0 {
		ev := <-s.events
		correlation := ev.data["metadata"].(map[string]any)["correlation_id"]
		require.NotEqual(t, after, correlation, "an event after the revocation reached the stream: %+v", ev)
		if correlation == before {
			history++
		}
	}
	require.NotZero(t, history, "the catch-up sent none of the history before the revocation")
}

// acceptOne posts a one-message order without require (for hooks that
// run off the test's goroutine) and returns its id.
func (e *env) acceptOne(key string) (string, error) {
	b, _ := json.Marshal(order(sim.ExampleDelivered))
	req, err := http.NewRequest("POST", e.srv.URL+"/v1/orders", bytes.NewReader(b))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer res.Body.Close()
	var out struct {
		OrderID string `json:"order_id"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil || res.StatusCode != 202 {
		return "", fmt.Errorf("order: %d %v", res.StatusCode, err)
	}
	return out.OrderID, nil
}
