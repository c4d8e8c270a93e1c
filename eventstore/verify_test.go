package eventstore_test

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// tamper runs a statement with the immutability triggers off, as only a
// superuser could: the point is that verify notices what the triggers
// cannot stop.
func tamper(t *testing.T, db *storetest.DB, stmt string) {
	t.Helper()
	ctx := context.Background()
	_, err := db.Pool.Exec(ctx, `ALTER TABLE events DISABLE TRIGGER events_immutable`)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, stmt)
	require.NoError(t, err)
	_, err = db.Pool.Exec(ctx, `ALTER TABLE events ENABLE TRIGGER events_immutable`)
	require.NoError(t, err)
}

func TestVerifyFindsEveryKindOfDamage(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	for _, st := range []string{"good", "altered", "reordered", "gap", "orphan"} {
		_, err := s.Append(ctx, st, eventstore.NoStream, ev("A", 1), ev("B", 2), ev("C", 3))
		require.NoError(t, err)
	}
	rep, err := eventstore.Verify(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.Empty(t, rep.Problems)
	require.Equal(t, 5, rep.Streams)
	require.Equal(t, 15, rep.Events)

	tamper(t, db, `UPDATE events SET data = '{"n": 99, "text": "<é>"}' WHERE stream_id = 'altered' AND stream_version = 2`)
	tamper(t, db, `UPDATE events SET stream_version = stream_version + 10 WHERE stream_id = 'reordered' AND stream_version = 1`)
	tamper(t, db, `DELETE FROM events WHERE stream_id = 'gap' AND stream_version = 2`)
	_, err = db.Pool.Exec(ctx, `DELETE FROM streams WHERE stream_id = 'orphan'`)
	require.NoError(t, err)

	rep, err = eventstore.Verify(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"altered", "reordered", "gap", "orphan"}, rep.FailedStreams(), "%v", rep.Problems)
}

func TestVerifyChecksDomainInvariants(t *testing.T) {
	ctx := context.Background()
	s, db := newStore(t)
	md := eventstore.Metadata{AccountID: "a"}
	opened, _ := domain.OpenAccount("a", "Acme", "EUR", nil, t0)
	_, err := s.Append(ctx, domain.AccountStream("a"), eventstore.NoStream,
		eventstore.MustEvent(opened, md),
		// claims a balance the history does not give it
		eventstore.MustEvent(domain.AccountCredited{Amount: domain.Money{AmountMicros: 100, Currency: "EUR"},
			Balances: domain.Balances{BalanceAfter: 1_000_000}}, md))
	require.NoError(t, err)
	_, err = s.Append(ctx, domain.MessageStream("m"), eventstore.NoStream,
		eventstore.MustEvent(domain.MessageAccepted{MessageID: "m"}, md),
		eventstore.MustEvent(domain.MessageDelivered{Attempt: 0}, md)) // delivered without being submitted
	require.NoError(t, err)
	rep, err := eventstore.Verify(ctx, db.Pool, nil)
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"account-a", "message-m"}, rep.FailedStreams(), "%v", rep.Problems)
}
