package projections_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/projections"
)

// TestProjectionFollowsEveryPath drives messages through every path the
// pipeline can take and checks each read model at the points support
// would look at it.
func TestProjectionFollowsEveryPath(t *testing.T) {
	f := newFixture(t)
	f.run(projections.Config{})
	acct := f.openAccount(10_000_000)
	order, m := f.placeOrder(acct, "+4915100000000", "+4915100000002", "+4915100000003", "+4915100000004", "+4915100000009")
	tenant := projections.ForAccount(acct)
	f.caughtUp()

	o, err := projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, domain.OrderStateAccepted, o.State())
	require.Equal(t, projections.Counts{Accepted: 5}, o.Counts)

	f.deliverAll(m[0])
	f.queue(m[1])
	f.route(m[1], "sim-a")
	f.fail(m[1], domain.CodeInvalidDestination, domain.StageSubmit)
	// m[2]: the first route fails transiently, the retry goes elsewhere.
	f.queue(m[2])
	f.route(m[2], "sim-a")
	f.retry(m[2], domain.CodeProviderUnavailable, domain.StageSubmit)
	f.caughtUp()
	got, err := projections.GetMessage(f.ctx, f.db.Pool, tenant, m[2])
	require.NoError(t, err)
	require.Equal(t, "queued", got.State, "a waiting retry shows as queued")
	require.Equal(t, 2, got.Attempt, "with the next attempt's number")
	require.Equal(t, domain.CodeProviderUnavailable, got.Failure.Code)
	require.Equal(t, "sim-a", got.Route.Provider, "the failed attempt's route stays until the next is queued")
	f.queue(m[2])
	got, err = projections.GetMessage(f.ctx, f.db.Pool, tenant, m[2])
	require.NoError(t, err)
	f.caughtUp()
	got, err = projections.GetMessage(f.ctx, f.db.Pool, tenant, m[2])
	require.NoError(t, err)
	require.Equal(t, "queued", got.State)
	require.Equal(t, 2, got.Attempt)
	require.Nil(t, got.Route, "a new attempt has no route yet")
	f.route(m[2], "sim-b")
	f.submit(m[2], 80*time.Millisecond)
	f.deliver(m[2])
	// m[3]: submitted, a transient delivery failure, then the validity ends.
	f.queue(m[3])
	f.route(m[3], "sim-a")
	f.submit(m[3], 30*time.Millisecond)
	f.retry(m[3], domain.CodeDeliveryDelayed, domain.StageDelivery)
	f.fail(m[3], domain.CodeExpired, domain.StageExpiry)
	// m[4]: submitted, no receipt yet.
	f.queue(m[4])
	f.route(m[4], "sim-a")
	f.submit(m[4], 20*time.Millisecond)
	f.caughtUp()

	o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, domain.OrderStateExecuting, o.State())
	require.Equal(t, projections.Counts{Submitted: 1, Delivered: 2, Failed: 2, Expired: 1}, o.Counts)
	require.False(t, o.StartedAt.IsZero())

	got, err = projections.GetMessage(f.ctx, f.db.Pool, tenant, m[3])
	require.NoError(t, err)
	require.Equal(t, "failed", got.State)
	require.Equal(t, 1, got.Attempt, "expired while waiting for attempt 2: attempt 1 was the last made")
	require.Equal(t, domain.CodeExpired, got.Failure.Code)
	require.Equal(t, domain.StageExpiry, got.Failure.Stage)
	require.True(t, got.Failure.Permanent)

	got, err = projections.GetMessage(f.ctx, f.db.Pool, tenant, m[4])
	require.NoError(t, err)
	require.Equal(t, "submitted", got.State)
	require.Equal(t, 1, got.Attempt)
	require.Equal(t, &projections.Route{RouteID: "de-mobile", Provider: "sim-a", Reason: "highest priority healthy"}, got.Route)
	require.NotEmpty(t, got.ProviderMessageID)
	require.False(t, got.SubmittedAt.IsZero())
	require.True(t, got.DeliveredAt.IsZero())

	f.deliver(m[4])
	f.settle(order, m...)
	f.caughtUp()
	o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, domain.OrderStateCompleted, o.State())
	require.Equal(t, projections.Counts{Delivered: 3, Failed: 2, Expired: 1}, o.Counts)
	require.Equal(t, domain.Money{AmountMicros: 3 * 75_000, Currency: "EUR"}, o.Charged)
	require.Equal(t, domain.Money{AmountMicros: 2 * 75_000, Currency: "EUR"}, o.Refunded)
	require.False(t, o.CompletedAt.IsZero())

	a, err := projections.GetAccount(f.ctx, f.db.Pool, tenant, acct)
	require.NoError(t, err)
	require.Equal(t, int64(10_000_000-3*75_000), a.Balance)
	require.Equal(t, int64(0), a.Reserved)
	require.Equal(t, int64(10_000_000), a.Credited)
	require.Equal(t, int64(3*75_000), a.Spent)
	require.Equal(t, int64(2*75_000), a.Refunded)

	stats, err := projections.GetProviderStats(f.ctx, f.db.Pool, f.now.Add(-24*time.Hour), f.now.Add(time.Hour))
	require.NoError(t, err)
	require.Len(t, stats, 2)
	simA, simB := stats[0], stats[1]
	require.Equal(t, "sim-a", simA.Provider)
	require.Equal(t, [4]int64{3, 2, 2, 2}, [4]int64{simA.Submitted, simA.Delivered, simA.Failed, simA.Retried})
	require.Equal(t, [4]int64{1, 1, 0, 0}, [4]int64{simB.Submitted, simB.Delivered, simB.Failed, simB.Retried})
	require.Equal(t, int64(3), simA.SubmitLatency.Count)
	require.Equal(t, int64(50), simA.SubmitLatency.P99, "20, 30 and 40 ms all fall in the first bucket")
	require.ElementsMatch(t, []projections.FailureCount{
		{Code: domain.CodeInvalidDestination, Stage: "submit", Permanent: true, Count: 1},
		{Code: domain.CodeExpired, Stage: "expiry", Permanent: true, Count: 1},
		{Code: domain.CodeProviderUnavailable, Stage: "submit", Permanent: false, Count: 1},
		{Code: domain.CodeDeliveryDelayed, Stage: "delivery", Permanent: false, Count: 1},
	}, simA.Failures)

	// Nothing of this account is visible to another one.
	other := projections.ForAccount(f.openAccount(1_000_000))
	_, err = projections.GetOrder(f.ctx, f.db.Pool, other, order)
	require.ErrorIs(t, err, projections.ErrNotFound)
	_, err = projections.GetMessage(f.ctx, f.db.Pool, other, m[0])
	require.ErrorIs(t, err, projections.ErrNotFound)
	_, err = projections.GetMessage(f.ctx, f.db.Pool, projections.Tenant{}, m[0])
	require.ErrorIs(t, err, projections.ErrNotFound, "the zero tenant sees nothing")
	_, err = projections.GetAccount(f.ctx, f.db.Pool, other, acct)
	require.ErrorIs(t, err, projections.ErrNotFound)
	_, err = projections.GetMessage(f.ctx, f.db.Pool, projections.AnyAccount(), m[0])
	require.NoError(t, err, "admin sees every account")

	f.caughtUp()
	f.requireVerified()
}

// errCrash is injected between a batch's writes and its commit.
var errCrash = errors.New("injected crash between the read-model writes and the commit")

// TestProjectionAppliesEachEventOnce runs the projection the way a fleet
// would misbehave: two instances of it racing for the same checkpoint,
// batches that crash after writing and before committing, instances
// killed mid-batch and restarted, and a redelivered batch from a stale
// cursor. The result must be the model a clean rebuild computes, and
// verify must find nothing.
func TestProjectionAppliesEachEventOnce(t *testing.T) {
	f := newFixture(t)
	p, err := projections.Lookup("messages")
	require.NoError(t, err)
	var batches atomic.Int64
	var crashing atomic.Bool
	crashing.Store(true)
	consumer := eventstore.Consumer{
		Name: p.Checkpoint(), Filter: eventstore.Filter{Types: p.Types}, PartitionKey: p.PartitionKey, BatchSize: 7, Poll: 10 * time.Millisecond, Logger: quiet,
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			if err := p.Apply(ctx, tx.Tx, batch); err != nil {
				return err
			}
			if batches.Add(1)%5 == 0 && crashing.Load() {
				return errCrash
			}
			return nil
		},
	}
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range 2 { // two rival instances
			wg.Add(1)
			go func() { defer wg.Done(); _ = f.store.Run(ctx, consumer) }()
		}
		return func() { cancel(); wg.Wait() }
	}
	stop := start()
	acct := f.openAccount(100_000_000)
	var orders [][]string
	for i := range 6 {
		order, ids := f.placeOrder(acct, "+4915100000001", "+4915100000002", "+4915100000003")
		f.deliverAll(ids[0])
		f.queue(ids[1])
		f.route(ids[1], "sim-b")
		f.retry(ids[1], domain.CodeTimeout, domain.StageSubmit)
		f.queue(ids[1])
		f.route(ids[1], "sim-a")
		f.submit(ids[1], 10*time.Millisecond)
		f.deliver(ids[1])
		f.queue(ids[2])
		f.fail(ids[2], domain.CodeNoRoute, domain.StageRouting)
		f.settle(order, ids...)
		orders = append(orders, ids)
		if i%2 == 1 {
			stop() // killed mid-run: whatever was in flight rolls back
			stop = start()
		}
	}
	// Wait for the checkpoint to pass every event, through the crashes.
	f.caughtUp("messages")
	stop()
	require.Greater(t, batches.Load(), int64(10), "enough batches ran to crash a few")

	// A batch delivered again from a cursor the checkpoint has passed is
	// refused, and the model does not move.
	crashing.Store(false)
	before := f.dump("public", "messages")
	_, _, err = f.store.Step(f.ctx, consumer, eventstore.Cursor{})
	require.ErrorIs(t, err, eventstore.ErrCheckpointMoved)
	require.Equal(t, before, f.dump("public", "messages"))

	// Applying a batch twice by hand (a duplicate the checkpoint did not
	// catch) leaves the message rows alone: each row knows its version.
	evs, _, err := f.store.ReadAll(f.ctx, eventstore.Cursor{}, 1_000_000, eventstore.Filter{Types: []string{"MessageRouted"}})
	require.NoError(t, err)
	require.NoError(t, pgxTx(f, func(ctx context.Context, tx *eventstore.Tx) error { return p.Apply(ctx, tx.Tx, evs) }))
	require.Equal(t, before, f.dump("public", "messages"), "a duplicate message event changed the model")

	o, err := projections.GetOrder(f.ctx, f.db.Pool, projections.ForAccount(acct), f.message(orders[0][0]).OrderID)
	require.NoError(t, err)
	require.Equal(t, projections.Counts{Delivered: 2, Failed: 1}, o.Counts)
	require.Equal(t, int64(75_000), o.Refunded.AmountMicros)

	f.run(projections.Config{Projections: []string{"accounts"}})
	f.caughtUp()
	f.requireVerified()
	_, err = projections.Rebuild(f.ctx, f.db.Pool, "messages", nil)
	require.NoError(t, err)
	require.Equal(t, before, f.dump("public", "messages"), "the model after crashes and races differs from a clean rebuild")
}

func pgxTx(f *fixture, fn func(context.Context, *eventstore.Tx) error) error {
	return f.store.InTx(f.ctx, func(tx *eventstore.Tx) error { return fn(f.ctx, tx) })
}

// TestTailDeliversAStreamOutOfVersionOrder shows that the gap-safe tail
// can hand a consumer a stream's version 2 before its version 1, and that
// the projection folds them in version order anyway.
//
// A transaction gets its id at its first write. Here T writes first (and
// so holds the smaller id), then A appends version 1 of a message stream
// and commits, then T appends version 2 and commits. Tail order is by
// transaction id: version 2 first.
func TestTailDeliversAStreamOutOfVersionOrder(t *testing.T) {
	f := newFixture(t)
	acct := f.openAccount(10_000_000)
	_, ids := f.placeOrder(acct, "+4915100000001")
	id := ids[0]
	m := f.message(id)
	queued, err := m.Queue("job", f.tick())
	require.NoError(t, err)
	require.NoError(t, m.Apply(queued))
	routed, err := m.Route(domain.RouteDecision{RouteID: "r", Provider: "sim-a", Reason: "only"}, f.tick())
	require.NoError(t, err)
	md := f.md(acct, m.OrderID)

	tWrote, aDone := make(chan struct{}), make(chan struct{})
	tErr := make(chan error, 1)
	go func() {
		tErr <- f.store.InTx(f.ctx, func(tx *eventstore.Tx) error {
			// T's first write takes its transaction id.
			if _, err := tx.Append(f.ctx, eventstore.StreamAppend{Stream: "unrelated-" + id, Expected: eventstore.NoStream,
				Events: []eventstore.EventData{eventstore.MustEvent(domain.APIKeyIssued{KeyID: "k"}, md)}}); err != nil {
				return err
			}
			close(tWrote)
			<-aDone
			_, err := tx.Append(f.ctx, eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.Exact(2),
				Events: []eventstore.EventData{eventstore.MustEvent(routed, md)}})
			return err
		})
	}()
	<-tWrote
	_, err = f.store.Append(f.ctx, domain.MessageStream(id), eventstore.Exact(1), eventstore.MustEvent(queued, md))
	require.NoError(t, err)
	close(aDone)
	require.NoError(t, <-tErr)

	// Committed, but the tail shows them only once no older transaction
	// anywhere on the server is open.
	var tail []eventstore.RecordedEvent
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		tail, _, err = f.store.ReadAll(f.ctx, eventstore.Cursor{}, 100, eventstore.Filter{Types: []string{"MessageQueued", "MessageRouted"}})
		return err == nil && len(tail) == 2, fmt.Sprintf("tail %d events, err %v", len(tail), err)
	})
	require.Equal(t, []int{3, 2}, []int{tail[0].Version, tail[1].Version}, "the tail delivers version 3 before version 2")

	f.run(projections.Config{BatchSize: 1}) // one event per batch: version 3 arrives alone, before 2
	f.caughtUp()
	got, err := projections.GetMessage(f.ctx, f.db.Pool, projections.ForAccount(acct), id)
	require.NoError(t, err)
	require.Equal(t, "routed", got.State)
	require.Equal(t, 3, got.Version)
	o, err := projections.GetOrder(f.ctx, f.db.Pool, projections.ForAccount(acct), m.OrderID)
	require.NoError(t, err)
	require.Equal(t, projections.Counts{Routed: 1}, o.Counts)
	f.requireVerified()
}

// TestProjectionShowsScheduledAndCanceled: an order with a send_at shows
// its messages scheduled (in the view, the order's counts and the search)
// until they are queued; a canceled message shows canceled, whether it was
// canceled while scheduled or once queued; the order completes with them.
func TestProjectionShowsScheduledAndCanceled(t *testing.T) {
	f := newFixture(t)
	acct := f.openAccount(10_000_000)
	sendAt := f.now.Add(time.Hour)
	order, m := f.placeScheduledOrder(acct, sendAt, "+4915100000000", "+4915100000001", "+4915100000009")
	tenant := projections.ForAccount(acct)
	o, err := projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, projections.Counts{Scheduled: 3}, o.Counts, "before the projector: folded from the order stream")
	f.run(projections.Config{})
	f.caughtUp()

	o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, projections.Counts{Scheduled: 3}, o.Counts)
	require.Equal(t, domain.OrderStateAccepted, o.State())
	require.True(t, sendAt.Equal(o.SendAt), "order send_at %v", o.SendAt)
	require.True(t, sendAt.Add(time.Hour).Equal(o.ExpiresAt), "the validity counts from send_at")
	got, err := projections.GetMessage(f.ctx, f.db.Pool, tenant, m[0])
	require.NoError(t, err)
	require.Equal(t, "scheduled", got.State)
	require.True(t, sendAt.Equal(got.SendAt))
	page, err := projections.SearchMessages(f.ctx, f.db.Pool, acct, projections.Search{State: "scheduled", Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Messages, 3)

	f.cancel(m[0]) // while scheduled
	f.queue(m[1])  // its send_at came
	f.cancel(m[1]) // canceled once queued
	f.deliverAll(m[2])
	f.caughtUp()
	got, err = projections.GetMessage(f.ctx, f.db.Pool, tenant, m[0])
	require.NoError(t, err)
	require.Equal(t, "canceled", got.State)
	require.False(t, got.CanceledAt.IsZero())
	o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, projections.Counts{Canceled: 2, Delivered: 1}, o.Counts)
	require.Equal(t, domain.OrderStateExecuting, o.State())
	page, err = projections.SearchMessages(f.ctx, f.db.Pool, acct, projections.Search{State: "canceled", Limit: 10})
	require.NoError(t, err)
	require.Len(t, page.Messages, 2)
	page, err = projections.OrderMessages(f.ctx, f.db.Pool, tenant, order, "scheduled", 10, "")
	require.NoError(t, err)
	require.Empty(t, page.Messages)

	f.settle(order, m...)
	f.caughtUp()
	o, err = projections.GetOrder(f.ctx, f.db.Pool, tenant, order)
	require.NoError(t, err)
	require.Equal(t, domain.OrderStateCompleted, o.State())
	require.Equal(t, domain.Money{AmountMicros: 2 * 75_000, Currency: "EUR"}, o.Refunded)
	f.requireVerified()
}
