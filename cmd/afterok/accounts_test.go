package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// TestAccountAndKeyCommands runs the operator's account and key commands
// against a real database: each action is an event naming the command
// line's actor and the reason given, and shows in `accounts show` and
// `replay account`.
func TestAccountAndKeyCommands(t *testing.T) {
	db := storetest.NewDB(t)
	t.Setenv("DATABASE_URL", db.URL)
	ctx := context.Background()
	jsonOf := func(args ...string) map[string]any {
		t.Helper()
		code, out, errOut := afterok(t, args...)
		require.Equal(t, 0, code, "afterok %s: %s", strings.Join(args, " "), errOut)
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(out), &m), out)
		return m
	}
	created := jsonOf("accounts", "create", "--name", "Acme", "--credit", "10", "--reason", "signed the contract", "--json")
	id := created["account_id"].(string)

	issued := jsonOf("keys", "issue", "--account", id, "--scopes", "messages:read", "--reason", "support desk", "--json")
	keyID, key := issued["key_id"].(string), issued["api_key"].(string)
	require.Equal(t, []any{"messages:read"}, issued["scopes"])

	code, out, _ := afterok(t, "keys", "list", "--account", id, "--json")
	require.Equal(t, 0, code)
	require.NotContains(t, out, key[len(key)-20:], "a key's secret is listed")
	require.NotContains(t, out, created["api_key"].(string)[20:])
	var list struct {
		Keys []accounts.Key `json:"keys"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &list))
	require.Len(t, list.Keys, 2)

	credit := jsonOf("accounts", "credit", id, "--amount", "12.50", "--reason", "invoice 117 paid", "--json")
	require.Equal(t, map[string]any{"amount_micros": 22_500_000.0, "currency": "EUR"}, credit["balance"])

	svc := accounts.New(eventstore.New(db.Pool), time.Now)
	_, err := svc.Authenticate(ctx, key)
	require.NoError(t, err)
	revoked := jsonOf("keys", "revoke", keyID, "--reason", "leaked in a ticket", "--json")
	require.Equal(t, true, revoked["revoked"])
	_, err = accounts.New(eventstore.New(db.Pool), time.Now).Authenticate(ctx, key)
	require.ErrorIs(t, err, accounts.ErrUnauthenticated)

	show := jsonOf("accounts", "show", id, "--json")
	require.Equal(t, map[string]any{"amount_micros": 22_500_000.0, "currency": "EUR"}, show["balance"])
	var types []string
	for _, a := range show["actions"].([]any) {
		a := a.(map[string]any)
		types = append(types, a["type"].(string))
		require.True(t, strings.HasPrefix(a["actor"].(string), "cli"), "%v", a)
	}
	require.Equal(t, []string{"AccountOpened", "AccountCredited", "APIKeyIssued", "APIKeyIssued", "BalanceCredited", "APIKeyRevoked"}, types)

	code, out, _ = afterok(t, "replay", "account", id)
	require.Equal(t, 0, code)
	require.Contains(t, out, "ACTOR")
	require.Regexp(t, `BalanceCredited\s+cli\S*\s+amount="12.500000 EUR" reason="invoice 117 paid"`, out)
	require.Regexp(t, `APIKeyRevoked\s+cli\S*\s+key=`+keyID+` reason="leaked in a ticket"`, out)

	// The list is the read model's: fold it, then list.
	code, _, errOut := afterok(t, "projections", "rebuild", "accounts")
	require.Equal(t, 0, code, errOut)
	listed := jsonOf("accounts", "list", "--json")
	require.Len(t, listed["accounts"], 1)
	require.Equal(t, map[string]any{"amount_micros": 22_500_000.0, "currency": "EUR"}, listed["accounts"].([]any)[0].(map[string]any)["balance"])
	code, out, _ = afterok(t, "accounts", "list")
	require.Equal(t, 0, code)
	require.Contains(t, out, id)

	// Refusals: usage errors are 2, what the store refuses 1, nothing written.
	before := eventCount(t, db)
	for _, c := range []struct {
		code int
		args []string
	}{
		{2, []string{"accounts", "credit", id, "--amount", "5"}},
		{2, []string{"accounts", "credit", id, "--amount", "five", "--reason", "x"}},
		{2, []string{"accounts", "credit", id, "--amount", "-5", "--reason", "x"}},
		{1, []string{"accounts", "credit", id, "--amount", "5", "--reason", "a\x00b"}},
		{1, []string{"accounts", "credit", "01ARZ3NDEKTSV4RRFFQ69G5FAV", "--amount", "5", "--reason", "x"}},
		{1, []string{"accounts", "show", "01ARZ3NDEKTSV4RRFFQ69G5FAV"}},
		{1, []string{"keys", "revoke", "key_nope"}},
		{1, []string{"keys", "issue", "--account", id, "--scopes", "root"}},
		{1, []string{"keys", "issue", "--account", "01ARZ3NDEKTSV4RRFFQ69G5FAV"}},
		{2, []string{"keys", "issue"}},
		{2, []string{"keys", "list"}},
		{2, []string{"keys", "frobnicate"}},
		{2, []string{"accounts", "list", "--cursor", "x"}},
	} {
		code, _, _ := afterok(t, c.args...)
		require.Equal(t, c.code, code, "afterok %s", strings.Join(c.args, " "))
	}
	require.Equal(t, before, eventCount(t, db))
	code, _, errOut = afterok(t, "verify")
	require.Equal(t, 0, code, errOut)
}

func eventCount(t *testing.T, db *storetest.DB) int {
	var n int
	require.NoError(t, db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n))
	return n
}
