package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// TestAccountsCreditIdempotencyKey: the operator whose credit timed out
// runs it again with the same --idempotency-key and credits once.
func TestAccountsCreditIdempotencyKey(t *testing.T) {
	db := storetest.NewDB(t)
	t.Setenv("DATABASE_URL", db.URL)
	run := func(wantCode int, args ...string) (string, string) {
		t.Helper()
		code, out, errOut := afterok(t, args...)
		require.Equal(t, wantCode, code, "afterok %s: %s", strings.Join(args, " "), errOut)
		return out, errOut
	}
	out, _ := run(0, "accounts", "create", "--name", "Acme", "--credit", "10", "--reason", "signed", "--json")
	var created map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	id := created["account_id"].(string)

	credit := []string{"accounts", "credit", id, "--amount", "12.50", "--reason", "invoice 117 paid", "--idempotency-key", "pay-117", "--json"}
	first, firstErr := run(0, credit...)
	require.NotContains(t, firstErr, "already credited")
	var c map[string]any
	require.NoError(t, json.Unmarshal([]byte(first), &c))
	require.Equal(t, map[string]any{"amount_micros": 22_500_000.0, "currency": "EUR"}, c["balance"])
	before := eventCount(t, db)

	again, againErr := run(0, credit...)
	require.JSONEq(t, first, again, "the retry prints the first credit")
	require.Contains(t, againErr, "already credited")
	text, _ := run(0, credit[:len(credit)-1]...)
	require.Contains(t, text, "balance:  22.500000 EUR")
	require.Equal(t, before, eventCount(t, db), "a retry wrote an event")

	// The same key for another credit is refused and writes nothing.
	_, errOut := run(1, "accounts", "credit", id, "--amount", "13", "--reason", "invoice 117 paid", "--idempotency-key", "pay-117")
	require.Contains(t, errOut, "used for another credit")
	run(1, "accounts", "credit", id, "--amount", "13", "--reason", "x", "--idempotency-key", "has space")
	run(2, "accounts", "credit", id, "--amount", "13", "--reason", "x", "--idempotency-key", "")
	require.Equal(t, before, eventCount(t, db))

	show, _ := run(0, "accounts", "show", id, "--json")
	var s map[string]any
	require.NoError(t, json.Unmarshal([]byte(show), &s))
	require.Equal(t, map[string]any{"amount_micros": 22_500_000.0, "currency": "EUR"}, s["balance"])
	run(0, "verify")
}
