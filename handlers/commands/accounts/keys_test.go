package accounts_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

func newService(t *testing.T) (*accounts.Service, *storetest.DB) {
	t.Helper()
	db := storetest.NewDB(t)
	return accounts.New(eventstore.New(db.Pool), time.Now), db
}

func open(t *testing.T, svc *accounts.Service, scopes ...string) accounts.Created {
	t.Helper()
	c, err := svc.Create(context.Background(), accounts.NewAccount{Name: "Acme",
		Credit: domain.Money{AmountMicros: 1_000_000, Currency: "EUR"}, Scopes: scopes})
	require.NoError(t, err)
	return c
}

// accountEvents returns the types, actors and data of an account's events.
func accountEvents(t *testing.T, db *storetest.DB, accountID string) []eventstore.RecordedEvent {
	t.Helper()
	evs, err := eventstore.ReadStream(context.Background(), db.Pool, domain.AccountStream(accountID), 1)
	require.NoError(t, err)
	return evs
}

func TestIssueListRevoke(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	owner, err := svc.Authenticate(ctx, c.APIKey)
	require.NoError(t, err)

	k, err := svc.IssueKey(ctx, c.AccountID, []string{accounts.ScopeMessagesRead}, &owner, accounts.Action{Actor: owner.KeyID, Reason: "support desk"})
	require.NoError(t, err)
	require.Equal(t, []string{accounts.ScopeMessagesRead}, k.Scopes)
	p, err := svc.Authenticate(ctx, k.APIKey)
	require.NoError(t, err)
	require.Equal(t, k.KeyID, p.KeyID)

	keys, err := svc.ListKeys(ctx, c.AccountID)
	require.NoError(t, err)
	require.Len(t, keys, 2)
	require.Equal(t, c.KeyID, keys[0].KeyID)
	require.Equal(t, accounts.Prefix(k.KeyID), keys[1].Prefix)
	require.Contains(t, k.APIKey, keys[1].Prefix+"_", "the prefix is the start of the key")
	require.NotNil(t, keys[1].LastUsedAt, "authenticating stamps last_used_at")
	require.Nil(t, keys[1].RevokedAt)

	require.NoError(t, svc.RevokeKey(ctx, c.AccountID, k.KeyID, &owner, accounts.Action{Actor: owner.KeyID, Reason: "leaked in a ticket", Cause: "req_1"}))
	_, err = svc.Authenticate(ctx, k.APIKey)
	require.ErrorIs(t, err, accounts.ErrUnauthenticated, "the revoking process refuses the key at once")
	keys, err = svc.ListKeys(ctx, c.AccountID)
	require.NoError(t, err)
	require.NotNil(t, keys[1].RevokedAt)

	// Again: no second event, no error.
	require.NoError(t, svc.RevokeKey(ctx, c.AccountID, k.KeyID, nil, accounts.Action{Actor: "cli:test"}))

	evs := accountEvents(t, db, c.AccountID)
	last := evs[len(evs)-1]
	require.Equal(t, "APIKeyRevoked", last.Type)
	require.Equal(t, owner.KeyID, last.Metadata.Actor)
	require.Equal(t, "req_1", last.Metadata.CausationID)
	ev, err := last.Decode()
	require.NoError(t, err)
	require.Equal(t, domain.APIKeyRevoked{KeyID: k.KeyID, Reason: "leaked in a ticket", At: ev.(domain.APIKeyRevoked).At}, ev)
	issued, err := evs[len(evs)-2].Decode()
	require.NoError(t, err)
	require.Equal(t, "support desk", issued.(domain.APIKeyIssued).Reason)
	require.Equal(t, owner.KeyID, evs[len(evs)-2].Metadata.Actor)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// TestKeysCannotEscalate: a key hands out only scopes it holds, admin
// only when it is admin; it takes away only keys whose scopes it holds.
func TestKeysCannotEscalate(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc, accounts.ScopeOrdersWrite, accounts.ScopeMessagesRead)
	p, err := svc.Authenticate(ctx, c.APIKey)
	require.NoError(t, err)
	before := len(accountEvents(t, db, c.AccountID))
	for _, scopes := range [][]string{{accounts.ScopeAdmin}, {accounts.ScopeEventsRead}, {accounts.ScopeOrdersWrite, accounts.ScopeWebhooksManage}} {
		_, err := svc.IssueKey(ctx, c.AccountID, scopes, &p, accounts.Action{Actor: p.KeyID})
		require.ErrorIs(t, err, accounts.ErrScopeNotHeld, "%v", scopes)
	}
	_, err = svc.IssueKey(ctx, c.AccountID, []string{"root"}, &p, accounts.Action{Actor: p.KeyID})
	require.ErrorIs(t, err, accounts.ErrInvalid)
	require.Len(t, accountEvents(t, db, c.AccountID), before, "a refused key wrote an event")

	// Without scopes a key copies its issuer's.
	k, err := svc.IssueKey(ctx, c.AccountID, nil, &p, accounts.Action{Actor: p.KeyID})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{accounts.ScopeOrdersWrite, accounts.ScopeMessagesRead}, k.Scopes)

	// The operator may issue an admin key; this key may not revoke it.
	admin, err := svc.IssueKey(ctx, c.AccountID, []string{accounts.ScopeAdmin}, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	require.ErrorIs(t, svc.RevokeKey(ctx, c.AccountID, admin.KeyID, &p, accounts.Action{Actor: p.KeyID}), accounts.ErrScopeNotHeld)
	ap, err := svc.Authenticate(ctx, admin.APIKey)
	require.NoError(t, err)
	// An admin key's default issue is not admin.
	k2, err := svc.IssueKey(ctx, c.AccountID, nil, &ap, accounts.Action{Actor: ap.KeyID})
	require.NoError(t, err)
	require.ElementsMatch(t, accounts.DefaultScopes, k2.Scopes)
}

func TestRevokeAnotherAccountsKeyIsUnknown(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	a, b := open(t, svc), open(t, svc)
	before := len(accountEvents(t, db, a.AccountID))
	err := svc.RevokeKey(ctx, a.AccountID, b.KeyID, nil, accounts.Action{Actor: "cli:test"})
	require.ErrorIs(t, err, accounts.ErrUnknownKey)
	_, err = svc.Authenticate(ctx, b.APIKey)
	require.NoError(t, err, "b's key still works")
	require.Len(t, accountEvents(t, db, a.AccountID), before)
}

// TestLastUsedIsCoalesced: authentication writes last_used_at at most
// once a minute per key, not once per lookup.
func TestLastUsedIsCoalesced(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	var stamped time.Time
	for i := 0; i < 3; i++ {
		// A fresh service has an empty cache: every call is a lookup.
		_, err := accounts.New(eventstore.New(db.Pool), time.Now).Authenticate(ctx, c.APIKey)
		require.NoError(t, err)
		var at time.Time
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT last_used_at FROM api_keys WHERE key_id = $1`, c.KeyID).Scan(&at))
		if i == 0 {
			stamped = at
		}
		require.True(t, at.Equal(stamped), "lookup %d wrote last_used_at again (%s, then %s)", i, stamped, at)
	}
	_, err := db.Pool.Exec(ctx, `UPDATE api_keys SET last_used_at = now() - interval '2 minutes' WHERE key_id = $1`, c.KeyID)
	require.NoError(t, err)
	_, err = accounts.New(eventstore.New(db.Pool), time.Now).Authenticate(ctx, c.APIKey)
	require.NoError(t, err)
	var fresh bool
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT last_used_at > now() - interval '1 minute' FROM api_keys WHERE key_id = $1`, c.KeyID).Scan(&fresh))
	require.True(t, fresh, "a stamp older than a minute is renewed")
}

func TestCredit(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	a, err := svc.Credit(ctx, c.AccountID, 2_500_000, accounts.Action{Actor: "cli:ops", Reason: "invoice 117 paid"})
	require.NoError(t, err)
	require.Equal(t, int64(3_500_000), a.Balance)
	loaded, err := accounts.Load(ctx, db.Pool, c.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(3_500_000), loaded.Balance, "Load reads the balance the top-up recorded")

	evs := accountEvents(t, db, c.AccountID)
	last := evs[len(evs)-1]
	require.Equal(t, "BalanceCredited", last.Type)
	require.Equal(t, "cli:ops", last.Metadata.Actor)

	for _, bad := range []struct {
		amount int64
		reason string
		want   error
	}{{0, "x", domain.ErrInvalidAmount}, {-5, "x", domain.ErrInvalidAmount}, {domain.MaxCreditMicros + 1, "x", domain.ErrInvalidAmount},
		{1, "", domain.ErrInvalidReason}, {1, "a\x00b", domain.ErrInvalidReason}} {
		_, err := svc.Credit(ctx, c.AccountID, bad.amount, accounts.Action{Actor: "cli:ops", Reason: bad.reason})
		require.ErrorIs(t, err, bad.want, "%d %q", bad.amount, bad.reason)
	}
	_, err = svc.Credit(ctx, "01NOSUCHACCOUNT", 1, accounts.Action{Reason: "x"})
	require.ErrorIs(t, err, accounts.ErrUnknownAccount)
	require.Len(t, accountEvents(t, db, c.AccountID), len(evs), "a refused credit wrote an event")
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// TestNotLive names the keys that no longer authenticate, revoked or
// unknown, whatever the key cache holds.
func TestNotLive(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	k, err := svc.IssueKey(ctx, c.AccountID, nil, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	_, err = svc.Authenticate(ctx, k.APIKey) // cached
	require.NoError(t, err)
	gone, err := svc.NotLive(ctx, []string{c.KeyID, k.KeyID, "key_unknown"})
	require.NoError(t, err)
	require.Equal(t, []string{"key_unknown"}, gone)
	// Revoked in the database alone, so the cache still has it.
	_, err = db.Pool.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`, k.KeyID)
	require.NoError(t, err)
	gone, err = svc.NotLive(ctx, []string{c.KeyID, k.KeyID})
	require.NoError(t, err)
	require.Equal(t, []string{k.KeyID}, gone)
}
