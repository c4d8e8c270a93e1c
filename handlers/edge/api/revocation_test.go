package api_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
)

// TestRevokedKeyIsRefusedWithinTheCacheTTL revokes a key in the database
// right after the server authenticated (and cached) it: the server refuses
// it within accounts.KeyCacheTTL, the contract's one second, not the 30 s
// the cache used to keep it.
func TestRevokedKeyIsRefusedWithinTheCacheTTL(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	require.Equal(t, 200, e.do("GET", "/v1/account", c.APIKey, nil).status)
	_, err := e.db.Pool.Exec(context.Background(), `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`, c.KeyID)
	require.NoError(t, err)
	revoked := time.Now()
	storetest.Poll(t, 5*time.Second, func() (bool, string) {
		r := e.do("GET", "/v1/account", c.APIKey, nil)
		return r.status == 401, fmt.Sprintf("still %d after %s", r.status, time.Since(revoked))
	})
	took := time.Since(revoked)
	require.LessOrEqual(t, took, accounts.KeyCacheTTL+250*time.Millisecond, "a revoked key worked for %s", took)
}
