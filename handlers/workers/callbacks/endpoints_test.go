package callbacks

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// TestOnlyAccountsWithEndpointsAreOrderedAndMatched gives the fan-out a
// batch of three accounts' events, one account with an enabled endpoint,
// one with a disabled one and one with none (most accounts): only the
// first account's events go on to the stream-order read and the match,
// in their order; a batch of accounts without endpoints goes no further.
func TestOnlyAccountsWithEndpointsAreOrderedAndMatched(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	_, err := db.Pool.Exec(ctx, `
INSERT INTO webhook_endpoints (webhook_id, account_id, url, event_types, created_at, updated_at, enabled)
VALUES ('AAAAAAAAAAAAAAAAAAAAAAAAAA', 'with', 'https://a', '{MessageDelivered}', now(), now(), true),
       ('BBBBBBBBBBBBBBBBBBBBBBBBBB', 'disabled', 'https://b', '{MessageDelivered}', now(), now(), false)`)
	require.NoError(t, err)
	s := eventstore.New(db.Pool)
	d, err := New(Config{Store: s, Webhooks: webhooks.New(s, webhooks.Config{})})
	require.NoError(t, err)
	var batch []eventstore.RecordedEvent
	for i, acc := range []string{"none", "with", "disabled", "with", "", "none", "with"} {
		batch = append(batch, eventstore.RecordedEvent{Position: int64(i + 1), AccountID: acc, StreamID: "s"})
	}
	got, err := d.withEndpoints(ctx, batch)
	require.NoError(t, err)
	var positions []int64
	for _, e := range got {
		positions = append(positions, e.Position)
	}
	require.Equal(t, []int64{2, 4, 7}, positions)

	got, err = d.withEndpoints(ctx, batch[:1])
	require.NoError(t, err)
	require.Empty(t, got)
}
