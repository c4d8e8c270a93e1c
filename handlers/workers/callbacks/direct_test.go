package callbacks_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/webhooks"
	"github.com/afterok/afterok/handlers/workers/callbacks"
)

// countOwedRows makes the database count every delivery row ever
// inserted (a trigger into a side table), so a test can tell which
// callbacks went through the retry path's table.
func countOwedRows(t *testing.T, h *harness) func() int {
	t.Helper()
	ctx := context.Background()
	_, err := h.db.Pool.Exec(ctx, `CREATE TABLE test_owed_log (webhook_id text, stream_id text, position bigint, ready boolean, attempt int);
CREATE FUNCTION test_owed_log() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO test_owed_log VALUES (NEW.webhook_id, NEW.stream_id, NEW.position, NEW.ready, NEW.attempt); RETURN NEW; END $$;
CREATE TRIGGER test_owed_log AFTER INSERT ON webhook_deliveries FOR EACH ROW EXECUTE FUNCTION test_owed_log();`)
	require.NoError(t, err)
	return func() int {
		var n int
		require.NoError(t, h.db.Pool.QueryRow(ctx, `SELECT count(*) FROM test_owed_log`).Scan(&n))
		return n
	}
}

// TestDirectPathWritesNoDeliveryRow: callbacks that succeed at once are
// sent by the fan-out itself: every one arrives, signed, in order per
// stream, each logged as a succeeded first attempt, and not one delivery
// row is written for them (the retry path wrote one per callback, and
// updated and deleted it: the cost the direct path removes). With the
// direct path off, the same run writes a row per callback: the count is
// a real measure.
func TestDirectPathWritesNoDeliveryRow(t *testing.T) {
	for _, tc := range []struct {
		name   string
		budget time.Duration
	}{{"direct", 0}, {"retry path only", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, webhooks.Config{})
			owedRows := countOwedRows(t, h)
			rc := newReceiver(t, nil)
			ep := h.endpoint(rc.URL)
			h.run(callbacks.Config{DirectBudget: tc.budget})
			streams := h.messages(40)
			want := h.events(streams, domain.WebhookEventTypes()...)
			storetest.Poll(t, 30*time.Second, func() (bool, string) { return rc.distinct() == len(want), "every callback" })
			h.waitOwedNothing(t)
			last := map[string]int{}
			for _, r := range rc.all() {
				require.Equal(t, 1, r.call, "no callback twice")
				require.NoError(t, verify(ep.Secret, r))
				require.Greater(t, r.payload.Data.Version, last[r.payload.Data.StreamID], "stream %s out of order", r.payload.Data.StreamID)
				last[r.payload.Data.StreamID] = r.payload.Data.Version
			}
			storetest.Poll(t, 5*time.Second, func() (bool, string) {
				page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeSucceeded}, 500, "")
				require.NoError(t, err)
				return len(page) == len(want), "every attempt logged"
			})
			if tc.budget < 0 {
				require.Equal(t, len(want), owedRows(), "the retry path writes a delivery row per callback")
				return
			}
			require.Zero(t, owedRows(), "a callback answered at once needs no delivery row")
		})
	}
}

// TestDirectFailureHoldsOnlyItsStream: on the direct path, a stream whose
// callback fails waits: its later events are not sent before the retry
// succeeded, while the other streams' callbacks go on, directly.
func TestDirectFailureHoldsOnlyItsStream(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	owedRows := countOwedRows(t, h)
	var mu sync.Mutex
	failing := "" // the stream of the first MessageQueued: it fails once
	rc := newReceiver(t, func(r *received) int {
		mu.Lock()
		defer mu.Unlock()
		if r.payload.Type == "MessageQueued" && failing == "" {
			failing = r.payload.Data.StreamID
		}
		if r.payload.Data.StreamID == failing && r.payload.Type == "MessageQueued" && r.call == 1 {
			return 503
		}
		return 200
	})
	h.endpoint(rc.URL)
	h.run(callbacks.Config{Schedule: []time.Duration{700 * time.Millisecond}, BreakerThreshold: 1000})
	streams := h.messages(10)
	want := h.events(streams, domain.WebhookEventTypes()...)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return rc.distinct() == len(want), "every callback" })
	h.waitOwedNothing(t)
	var order []string
	var retried time.Time
	othersDone := time.Time{}
	for _, r := range rc.all() {
		if r.payload.Data.StreamID != failing {
			if r.at.After(othersDone) {
				othersDone = r.at
			}
			continue
		}
		order = append(order, r.payload.Type)
		if r.payload.Type == "MessageQueued" && r.call == 2 {
			retried = r.at
		}
	}
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageQueued", "MessageRouted", "MessageSubmitted", "MessageDelivered"}, order,
		"the stream's later events wait for its failed one")
	require.True(t, othersDone.Before(retried), "the other streams did not wait for the retry (done %s, retry %s)", othersDone, retried)
	// Only the failing stream went through delivery rows: the failed
	// callback and at most the three behind it.
	n := owedRows()
	require.GreaterOrEqual(t, n, 1)
	require.LessOrEqual(t, n, 4, "the other streams did not go through the retry path")
}

// TestDirectHandOverOfASlowAnswer: a callback still unanswered when its
// batch's budget ends is handed to the retry path as a claimed delivery:
// its late answer is recorded as the first attempt's, it is not sent
// twice, the endpoint's later events go the retry path's way for a while,
// in order, and the batch did not wait for the slow answer.
func TestDirectHandOverOfASlowAnswer(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	owedRows := countOwedRows(t, h)
	var slow atomic.Bool
	slow.Store(true)
	rc := newReceiver(t, func(r *received) int {
		if r.payload.Type == "OrderAccepted" && slow.Load() {
			time.Sleep(1500 * time.Millisecond)
		}
		return 200
	})
	ep := h.endpoint(rc.URL)
	h.run(callbacks.Config{DirectBudget: 300 * time.Millisecond})
	streams := h.messages(5)
	want := h.events(streams, domain.WebhookEventTypes()...)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return rc.distinct() == len(want), "every callback" })
	h.waitOwedNothing(t)
	last := map[string]int{}
	for _, r := range rc.all() {
		require.Equal(t, 1, r.call, "%s (%s) sent twice", r.id, r.payload.Type)
		require.Greater(t, r.payload.Data.Version, last[r.payload.Data.StreamID], "stream %s out of order", r.payload.Data.StreamID)
		last[r.payload.Data.StreamID] = r.payload.Data.Version
	}
	var first received // the slow one
	for _, r := range rc.all() {
		if r.payload.Type == "OrderAccepted" {
			first = r
		}
	}
	order := want[first.id]
	var latest time.Time
	for _, r := range rc.all() {
		if r.at.After(latest) {
			latest = r.at
		}
	}
	require.Less(t, latest.Sub(first.at), 1400*time.Millisecond, "the other callbacks waited for the slow answer")
	storetest.Poll(t, 5*time.Second, func() (bool, string) {
		page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{EventID: &order.ID}, 10, "")
		require.NoError(t, err)
		return len(page) == 1 && page[0].Attempt == 1 && page[0].Outcome == webhooks.OutcomeSucceeded && page[0].DurationMS >= 1400,
			"the slow answer logged as the first attempt's success"
	})
	require.Greater(t, owedRows(), 0, "the handed-over callback and those after it went through the retry path")
}

// TestStreamOrderAcrossBatchesWhenTheTailIsNot: the tail can bring a
// stream's version 3 before its version 2, in another batch (a
// transaction that wrote something else first holds the older id and
// appends version 3 after a younger one committed version 2). The
// receiver still gets the stream in version order, each event once.
func TestStreamOrderAcrossBatchesWhenTheTailIsNot(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	rc := newReceiver(t, nil)
	h.endpoint(rc.URL)
	// Batches of 4 events (the fan-out reads 4 × BatchSize).
	h.run(callbacks.Config{BatchSize: 1})
	ctx := context.Background()
	now := time.Now().UTC()
	id := ulid.Make().String()
	order := ulid.Make().String()
	md := eventstore.Metadata{AccountID: h.account, CorrelationID: order}
	money := domain.Money{AmountMicros: 100, Currency: "EUR"}
	stream := domain.MessageStream(id)
	_, err := h.store.Append(ctx, stream, eventstore.NoStream, eventstore.MustEvent(domain.MessageAccepted{MessageID: id, OrderID: order,
		AccountID: h.account, Price: money, ExpiresAt: now.Add(time.Hour), At: now}, md))
	require.NoError(t, err)
	storetest.Poll(t, 10*time.Second, func() (bool, string) { return rc.distinct() == 1, "the first callback" })

	wrote, committed, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() {
		done <- h.store.InTx(ctx, func(tx *eventstore.Tx) error {
			// Three other streams' events first: they take the older
			// transaction id and fill the tail's batch ahead of version 3.
			for i := range 3 {
				other := ulid.Make().String()
				if _, err := tx.Append(ctx, eventstore.StreamAppend{Stream: domain.MessageStream(other), Expected: eventstore.NoStream,
					Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageAccepted{MessageID: other, OrderID: order,
						AccountID: h.account, Index: i + 1, Price: money, ExpiresAt: now.Add(time.Hour), At: now}, md)}}); err != nil {
					return err
				}
			}
			close(wrote)
			<-committed
			_, err := tx.Append(ctx, eventstore.StreamAppend{Stream: stream, Expected: eventstore.Exact(2),
				Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageRouted{Attempt: 1, Route: domain.RouteDecision{Provider: "p"}, At: now}, md)}})
			return err
		})
	}()
	<-wrote
	_, err = h.store.Append(ctx, stream, eventstore.Exact(1), eventstore.MustEvent(domain.MessageQueued{Attempt: 1, At: now}, md))
	require.NoError(t, err)
	close(committed)
	require.NoError(t, <-done)

	storetest.Poll(t, 10*time.Second, func() (bool, string) { return rc.distinct() == 6, "every callback" })
	h.waitOwedNothing(t)
	var versions []int
	for _, r := range rc.all() {
		require.Equal(t, 1, r.call, "%s (%s) sent twice", r.id, r.payload.Type)
		if r.payload.Data.StreamID == stream {
			versions = append(versions, r.payload.Data.Version)
		}
	}
	require.Equal(t, []int{1, 2, 3}, versions, "the stream in version order")
}

// TestStopAfterAHandOverReturns: a deliverer stopped while a batch it
// handed a request over from is being written (here: before its write)
// returns, and sends the batch again after a restart. It hung: the
// handed-over request waited for a verdict on a batch that never became
// pending.
func TestStopAfterAHandOverReturns(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	release := make(chan struct{})
	var slow atomic.Bool
	slow.Store(true)
	rc := newReceiver(t, func(r *received) int {
		if slow.Load() && r.payload.Type == "OrderAccepted" {
			<-release
		}
		return 200
	})
	t.Cleanup(func() { close(release) })
	h.endpoint(rc.URL)
	handed := make(chan struct{})
	var once sync.Once
	stop := h.run(callbacks.Config{DirectBudget: 200 * time.Millisecond, Timeout: 5 * time.Second,
		Hooks: callbacks.Hooks{BeforeRecord: func(ctx context.Context) { once.Do(func() { close(handed) }); <-ctx.Done() }}})
	streams := h.messages(3)
	<-handed // the first batch's write waits, its slow request handed over and still out
	stopped := make(chan struct{})
	go func() { stop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		// Not t.Fatal: the test's cleanup would wait on the same stop.
		panic("the deliverer did not stop within 10 s of its context's end")
	}
	slow.Store(false)
	h.run(callbacks.Config{})
	want := h.events(streams, domain.WebhookEventTypes()...)
	storetest.Poll(t, 20*time.Second, func() (bool, string) { return rc.distinct() == len(want), "every callback after the restart" })
}
