package tracker_test

import (
	"context"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/workers/tracker"
)

var eur = func(n int64) domain.Money { return domain.Money{AmountMicros: n, Currency: "EUR"} }

// seedOrder appends what acceptance appends: an order of n messages, each
// priced 100, reserved on the account.
func seedOrder(t *testing.T, s *eventstore.Store, account string, n int) (string, []string) {
	ctx := context.Background()
	order := ulid.Make().String()
	now := time.Now().UTC()
	md := eventstore.Metadata{AccountID: account, CorrelationID: order}
	var ids []string
	appends := []eventstore.StreamAppend{{Stream: domain.OrderStream(order), Expected: eventstore.NoStream,
		Events: []eventstore.EventData{eventstore.MustEvent(domain.OrderAccepted{OrderID: order, AccountID: account,
			MessageCount: n, Price: eur(int64(100 * n)), At: now}, md)}}}
	for i := range n {
		id := ulid.Make().String()
		ids = append(ids, id)
		appends = append(appends, eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageAccepted{MessageID: id, OrderID: order,
				AccountID: account, Index: i, Price: eur(100), ExpiresAt: now.Add(time.Hour), At: now}, md)}})
	}
	require.NoError(t, s.InTx(ctx, func(tx *eventstore.Tx) error {
		a, err := accounts.LoadForUpdate(ctx, tx, account)
		if err != nil {
			return err
		}
		r, err := a.Reserve(order, eur(int64(100*n)), n, now)
		if err != nil {
			return err
		}
		_, err = tx.Append(ctx, append(appends, eventstore.StreamAppend{Stream: domain.AccountStream(account),
			Expected: eventstore.Exact(a.Version), Events: []eventstore.EventData{eventstore.MustEvent(r, md)}})...)
		return err
	}))
	return order, ids
}

// finish takes a message through a legal lifecycle to its final event.
func finish(t *testing.T, s *eventstore.Store, account, order string, id string, failed bool) {
	md := eventstore.Metadata{AccountID: account, CorrelationID: order}
	now := time.Now()
	evs := []eventstore.EventData{
		eventstore.MustEvent(domain.MessageQueued{Attempt: 1, At: now}, md),
		eventstore.MustEvent(domain.MessageRouted{Attempt: 1, Route: domain.RouteDecision{Provider: "p"}, At: now}, md),
		eventstore.MustEvent(domain.MessageSubmitted{Attempt: 1, Provider: "p", ProviderMessageID: "x", At: now}, md),
	}
	if failed {
		evs = append(evs, eventstore.MustEvent(domain.MessageFailed{Attempt: 1, Failure: domain.Failure{Code: domain.CodeExpired,
			Stage: domain.StageExpiry, Permanent: true}, At: now}, md))
	} else {
		evs = append(evs, eventstore.MustEvent(domain.MessageDelivered{Attempt: 1, At: now}, md))
	}
	_, err := s.Append(context.Background(), domain.MessageStream(id), eventstore.Exact(1), evs...)
	require.NoError(t, err)
}

func TestTrackerSettlesOnceAndCompletes(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	s := eventstore.New(db.Pool)
	acc, err := accounts.New(s, time.Now).Create(ctx, accounts.NewAccount{Name: "a", Credit: eur(10_000)})
	require.NoError(t, err)
	order, ids := seedOrder(t, s, acc.AccountID, 4)
	tr, err := tracker.New(tracker.Config{Store: s, BatchSize: 2})
	require.NoError(t, err)

	finish(t, s, acc.AccountID, order, ids[0], false)
	finish(t, s, acc.AccountID, order, ids[1], true)
	drain := func() { drainTracker(t, db, s, tr) }
	drain()
	a, err := accounts.Load(ctx, db.Pool, acc.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000-400+100), a.Balance, "the failed message's 100 came back")
	require.Equal(t, int64(200), a.Reserved, "two messages still in flight")
	require.Len(t, mustRead(t, s, domain.OrderStream(order)), 1, "not complete yet")

	finish(t, s, acc.AccountID, order, ids[2], false)
	finish(t, s, acc.AccountID, order, ids[3], true)
	drain()
	drain() // the tail is drained: nothing is settled twice
	a, err = accounts.Load(ctx, db.Pool, acc.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000-200), a.Balance)
	require.Zero(t, a.Reserved)
	recs := mustRead(t, s, domain.OrderStream(order))
	require.Len(t, recs, 2)
	evs, err := eventstore.DecodeAll(recs)
	require.NoError(t, err)
	done := evs[1].(domain.OrderCompleted)
	require.Equal(t, domain.OrderCounts{Delivered: 2, Failed: 2, Expired: 2}, done.Counts)
	require.Equal(t, int64(200), done.Refunded.AmountMicros)
	require.Equal(t, int64(200), done.Charged.AmountMicros)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// drainTracker drives the tracker's consumer by hand, batch by batch,
// until its checkpoint reaches the newest event. (A transaction open
// anywhere on the cluster holds the tail back for a moment: poll, with a
// deadline.)
func drainTracker(t *testing.T, db *storetest.DB, s *eventstore.Store, tr *tracker.Tracker) {
	t.Helper()
	ctx := context.Background()
	c := eventstore.Consumer{Name: "tracker", BatchSize: 2, Poll: 10 * time.Millisecond,
		Filter: eventstore.Filter{Types: domain.TypesOf(domain.MessageDelivered{}, domain.MessageFailed{}, domain.MessageCanceled{})},
		Handle: tracker.Handle(tr)}
	var head eventstore.Cursor
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT xid, global_position FROM events
		ORDER BY xid DESC, global_position DESC LIMIT 1`).Scan(&head.XID, &head.Position))
	deadline := time.Now().Add(10 * time.Second)
	// Step returns the cursor it saved for every partition; the oldest
	// partition's checkpoint need not move past events the filter skips.
	cur, err := eventstore.Checkpoint(ctx, db.Pool, "tracker")
	require.NoError(t, err)
	for cur.Less(head) {
		require.True(t, time.Now().Before(deadline), "tracker did not reach the head")
		cur, _, err = s.Step(ctx, c, cur)
		require.NoError(t, err)
	}
}

// TestTrackerRefundsCanceledOnceAndCompletes: canceled messages (one
// never queued, one queued) are refunded exactly once, in a release whose
// reason says so, and count towards the order's completion.
func TestTrackerRefundsCanceledOnceAndCompletes(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	s := eventstore.New(db.Pool)
	acc, err := accounts.New(s, time.Now).Create(ctx, accounts.NewAccount{Name: "a", Credit: eur(10_000)})
	require.NoError(t, err)
	order, ids := seedOrder(t, s, acc.AccountID, 3)
	tr, err := tracker.New(tracker.Config{Store: s, BatchSize: 2})
	require.NoError(t, err)
	md := eventstore.Metadata{AccountID: acc.AccountID, CorrelationID: order, Actor: "key-1"}
	now := time.Now()
	_, err = s.Append(ctx, domain.MessageStream(ids[0]), eventstore.Exact(1),
		eventstore.MustEvent(domain.MessageCanceled{Actor: "key-1", Reason: "r", At: now}, md))
	require.NoError(t, err)
	_, err = s.Append(ctx, domain.MessageStream(ids[1]), eventstore.Exact(1),
		eventstore.MustEvent(domain.MessageQueued{Attempt: 1, At: now}, md),
		eventstore.MustEvent(domain.MessageCanceled{Attempt: 1, Actor: "key-1", At: now}, md))
	require.NoError(t, err)
	drainTracker(t, db, s, tr)
	a, err := accounts.Load(ctx, db.Pool, acc.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000-100), a.Balance, "the two canceled messages' 200 came back")
	require.Equal(t, int64(100), a.Reserved)
	require.Len(t, mustRead(t, s, domain.OrderStream(order)), 1, "one message is not final")

	finish(t, s, acc.AccountID, order, ids[2], false)
	drainTracker(t, db, s, tr)
	drainTracker(t, db, s, tr)
	a, err = accounts.Load(ctx, db.Pool, acc.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000-100), a.Balance)
	require.Zero(t, a.Reserved)
	evs, err := eventstore.DecodeAll(mustRead(t, s, domain.OrderStream(order)))
	require.NoError(t, err)
	require.Len(t, evs, 2)
	done := evs[1].(domain.OrderCompleted)
	require.Equal(t, domain.OrderCounts{Delivered: 1, Canceled: 2}, done.Counts)
	require.Equal(t, int64(200), done.Refunded.AmountMicros)
	var refunded []string
	var amount int64
	acctEvs, err := eventstore.DecodeAll(mustRead(t, s, domain.AccountStream(acc.AccountID)))
	require.NoError(t, err)
	for _, e := range acctEvs {
		if r, ok := e.(domain.BalanceReleased); ok {
			require.Equal(t, "messages canceled", r.Reason)
			refunded, amount = append(refunded, r.MessageIDs...), amount+r.Amount.AmountMicros
		}
	}
	require.ElementsMatch(t, ids[:2], refunded, "each canceled message refunded once")
	require.Equal(t, int64(200), amount)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

func mustRead(t *testing.T, s *eventstore.Store, stream string) []eventstore.RecordedEvent {
	recs, err := s.ReadStream(context.Background(), stream, 1)
	require.NoError(t, err)
	return recs
}
