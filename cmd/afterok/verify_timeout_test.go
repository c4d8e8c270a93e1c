package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestVerifyIsNotCutByTheServingStatementTimeout: verify reads every event
// in one statement by design; at 1,000,000 messages that took longer than
// the serving roles' 60 s statement timeout, and verify died with
// "canceling statement due to statement timeout". It now runs under a
// timeout of its own: with the serving timeout at 1 ms it still verifies.
func TestVerifyIsNotCutByTheServingStatementTimeout(t *testing.T) {
	db := storetest.NewDB(t)
	t.Setenv("DATABASE_URL", db.URL)
	code, _, errOut := afterok(t, "accounts", "create", "--name", "Acme", "--credit", "10")
	require.Equal(t, 0, code, errOut)
	store := eventstore.New(db.Pool)
	batch := make([]eventstore.StreamAppend, 20_000)
	for i := range batch {
		batch[i] = eventstore.StreamAppend{Stream: fmt.Sprintf("note-%d", i), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{{Type: "Noted", SchemaVersion: 1, Data: []byte(`{"n":1}`)}}}
	}
	_, err := store.AppendMulti(context.Background(), batch)
	require.NoError(t, err)

	t.Setenv("AFTEROK_STATEMENT_TIMEOUT", "1ms")
	code, out, errOut := afterok(t, "verify")
	require.Equal(t, 0, code, "%s%s", out, errOut)
	require.Contains(t, out, "20001 streams")
}
