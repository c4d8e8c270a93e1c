package callbacks_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/webhooks"
	"github.com/afterok/afterok/handlers/workers/callbacks"
)

// TestDeliversSubscribedEventsSignedAndInOrder: every event of the
// subscribed types reaches the receiver once, signed (checked with the
// reference library), with the envelope as data, each stream in version
// order; other types never come; another account's events never come.
func TestDeliversSubscribedEventsSignedAndInOrder(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	rc := newReceiver(t, nil)
	all := newReceiver(t, nil)
	sub := h.endpoint(rc.URL+"/hook", "MessageAccepted", "MessageRouted", "MessageDelivered")
	every := h.endpoint(all.URL + "/all")
	// Another account's events, in the same store, never come.
	otherAcc, err := accounts.New(h.store, time.Now).Create(context.Background(), accounts.NewAccount{Name: "b",
		Credit: domain.Money{AmountMicros: 1 << 40, Currency: "EUR"}})
	require.NoError(t, err)
	h.run(callbacks.Config{})
	streams := h.messages(20)
	mine := h.account
	h.account = otherAcc.AccountID
	h.messages(5)
	h.account = mine
	want := h.events(streams, "MessageAccepted", "MessageRouted", "MessageDelivered")
	require.Len(t, want, 60)
	everyWant := h.events(streams, domain.WebhookEventTypes()...)
	require.Len(t, everyWant, 101)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return rc.distinct() == len(want) && all.distinct() == len(everyWant), "waiting for deliveries"
	})
	got := rc.all()
	require.Len(t, got, len(want), "each event once (no failure, no retry)")
	last := map[string]int{}
	for _, r := range got {
		e, ok := want[r.id]
		require.True(t, ok, "%s (%s) was not subscribed", r.id, r.payload.Type)
		require.NoError(t, verify(sub.Secret, r), "signature of %s", r.id)
		require.Equal(t, e.Type, r.payload.Type)
		require.Equal(t, e.StreamID, r.payload.Data.StreamID)
		require.Equal(t, e.Version, r.payload.Data.Version)
		require.Equal(t, e.Position, r.payload.Data.Position)
		require.Equal(t, h.account, r.payload.Data.Account)
		require.JSONEq(t, string(e.Data), string(r.payload.Data.Data))
		require.Equal(t, e.RecordedAt.UTC().Format("2006-01-02T15:04:05.000000Z07:00"), r.payload.Timestamp)
		require.Equal(t, "application/json", r.header.Get("Content-Type"))
		require.Greater(t, r.payload.Data.Version, last[e.StreamID], "stream %s out of order", e.StreamID)
		last[e.StreamID] = r.payload.Data.Version
	}
	lastAll := map[string]int{}
	for _, r := range all.all() {
		require.NoError(t, verify(every.Secret, r))
		require.Error(t, verify(sub.Secret, r), "signed with the other endpoint's secret")
		require.Greater(t, r.payload.Data.Version, lastAll[r.payload.Data.StreamID], "stream %s out of order", r.payload.Data.StreamID)
		lastAll[r.payload.Data.StreamID] = r.payload.Data.Version
	}
	// The attempt log has every one, succeeded; nothing is owed any more.
	page, _, err := h.svc.Attempts(context.Background(), h.account, sub.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeSucceeded}, 500, "")
	require.NoError(t, err)
	require.Len(t, page, 60)
	require.Equal(t, 200, *page[0].StatusCode)
	require.Equal(t, `{"ok":true}`, page[0].ResponseExcerpt)
	h.waitOwedNothing(t)
}

// TestRetriesFollowTheSchedule: the receiver answers 500 twice per event,
// then 200: everything arrives, and the attempt log shows the failures
// with their status codes and next attempts as the schedule says.
func TestRetriesFollowTheSchedule(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	rc := newReceiver(t, func(r *received) int {
		if r.call <= 2 {
			return 500
		}
		return 200
	})
	ep := h.endpoint(rc.URL, "MessageDelivered")
	schedule := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, time.Hour}
	h.run(callbacks.Config{Schedule: schedule, BreakerThreshold: 1000})
	streams := h.messages(5)
	want := h.events(streams, "MessageDelivered")
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		ok := 0
		for _, r := range rc.all() {
			if r.call == 3 {
				ok++
			}
		}
		return ok == len(want), "waiting for the third attempts"
	})
	// The receiver saw the pauses.
	firsts := map[string][]time.Time{}
	for _, r := range rc.all() {
		firsts[r.id] = append(firsts[r.id], r.at)
	}
	for id, at := range firsts {
		require.Len(t, at, 3, id)
		require.GreaterOrEqual(t, at[1].Sub(at[0]), 190*time.Millisecond, "pause after attempt 1")
		require.GreaterOrEqual(t, at[2].Sub(at[1]), 390*time.Millisecond, "pause after attempt 2")
	}
	for id := range want {
		eid := want[id].ID
		storetest.Poll(t, 5*time.Second, func() (bool, string) {
			page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{EventID: &eid}, 10, "")
			require.NoError(t, err)
			return len(page) == 3, "attempts recorded"
		})
		page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{EventID: &eid}, 10, "")
		require.NoError(t, err)
		// Newest first.
		require.Equal(t, webhooks.OutcomeSucceeded, page[0].Outcome)
		require.Equal(t, 3, page[0].Attempt)
		require.Nil(t, page[0].NextAttemptAt)
		for i, pause := range map[int]time.Duration{2: schedule[0], 1: schedule[1]} {
			a := page[i]
			require.Equal(t, webhooks.OutcomeFailed, a.Outcome)
			require.Equal(t, 3-i, a.Attempt)
			require.Equal(t, 500, *a.StatusCode)
			require.WithinDuration(t, a.At.Add(pause), *a.NextAttemptAt, time.Millisecond, "next attempt as the schedule says")
		}
	}
	// A cursor pages through the log.
	page, next, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 4, "")
	require.NoError(t, err)
	require.Len(t, page, 4)
	rest, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 100, next)
	require.NoError(t, err)
	require.Len(t, rest, 15-4)
	require.Greater(t, page[3].Seq, rest[0].Seq)
}

// TestExhaustedAfterTheScheduleAndReplayed: a receiver that always fails
// gets 1 + len(schedule) attempts, the last exhausted; a replay sends the
// event again, with the same webhook-id.
func TestExhaustedAfterTheScheduleAndReplayed(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	var fail atomic.Bool
	fail.Store(true)
	rc := newReceiver(t, func(*received) int {
		if fail.Load() {
			return 503
		}
		return 204
	})
	ep := h.endpoint(rc.URL, "OrderAccepted")
	h.run(callbacks.Config{Schedule: []time.Duration{50 * time.Millisecond, 50 * time.Millisecond}, BreakerThreshold: 1000})
	streams := h.messages(1)
	ev := h.events(streams, "OrderAccepted")
	require.Len(t, ev, 1)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeExhausted}, 10, "")
		require.NoError(t, err)
		return len(page) == 1, "waiting for exhaustion"
	})
	page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
	require.NoError(t, err)
	require.Len(t, page, 3)
	require.Equal(t, 3, page[0].Attempt)
	require.Len(t, rc.all(), 3)
	fail.Store(false)
	var id string
	for id = range ev {
	}
	n, err := h.svc.Replay(context.Background(), h.account, ep.WebhookID, nil, []string{id, "00000000-0000-7000-8000-000000000000"}, accounts.Action{Actor: "key_x", Reason: "client lost it"})
	require.NoError(t, err)
	require.Equal(t, 1, n, "the unknown id is not queued")
	storetest.Poll(t, 10*time.Second, func() (bool, string) { return len(rc.all()) == 4, "waiting for the replay" })
	got := rc.all()
	require.Equal(t, id, got[3].id, "a replay carries the event's id")
	require.NoError(t, verify(ep.Secret, got[3]))
	h.waitOwedNothing(t) // the replay's record is written after its answer
	// Replay by time: the whole order (one event of the subscribed type).
	since := time.Now().Add(-time.Hour)
	n, err = h.svc.Replay(context.Background(), h.account, ep.WebhookID, &since, nil, accounts.Action{})
	require.NoError(t, err)
	require.Equal(t, 1, n)
	recs, err := h.store.ReadStream(context.Background(), domain.WebhookStream(ep.WebhookID), 1)
	require.NoError(t, err)
	require.Equal(t, "WebhookReplayRequested", recs[len(recs)-1].Type)
	require.Equal(t, "key_x", recs[len(recs)-2].Metadata.Actor)
}

// TestGoneAndLongFailureDisable: 410 disables an endpoint at once; one
// whose every attempt failed for DisableAfter is disabled too; both
// visibly (an event, enabled false, a disabled_reason), and nothing more
// is sent to them.
func TestGoneAndLongFailureDisable(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	gone := newReceiver(t, func(*received) int { return 410 })
	failing := newReceiver(t, func(*received) int { return 500 })
	g := h.endpoint(gone.URL, "MessageQueued")
	f := h.endpoint(failing.URL, "MessageQueued")
	h.run(callbacks.Config{Schedule: []time.Duration{100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond,
		100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond, 100 * time.Millisecond},
		DisableAfter: 350 * time.Millisecond, BreakerThreshold: 1000})
	h.messages(3)
	for _, c := range []struct {
		id, reason string
	}{{g.WebhookID, "410 Gone"}, {f.WebhookID, "every attempt failed for 350ms"}} {
		storetest.Poll(t, 15*time.Second, func() (bool, string) {
			e, err := h.svc.Get(context.Background(), h.account, c.id)
			require.NoError(t, err)
			return !e.Enabled, "waiting for " + c.reason
		})
		e, err := h.svc.Get(context.Background(), h.account, c.id)
		require.NoError(t, err)
		require.Contains(t, e.DisabledReason, c.reason)
		recs, err := h.store.ReadStream(context.Background(), domain.WebhookStream(c.id), 1)
		require.NoError(t, err)
		last := recs[len(recs)-1]
		require.Equal(t, "WebhookEndpointDisabled", last.Type)
		require.Equal(t, "webhooks", last.Metadata.Actor)
	}
	time.Sleep(100 * time.Millisecond) // let a request that was in flight land
	n := len(gone.all()) + len(failing.all())
	time.Sleep(500 * time.Millisecond) // nothing more may come: there is no event to wait for
	require.Equal(t, n, len(gone.all())+len(failing.all()), "a disabled endpoint gets nothing")
	require.LessOrEqual(t, len(gone.all()), 3, "410 stops the endpoint at once (requests in flight aside)")
	// Enabled again: what it was owed goes out.
	failing.setAnswer(func(*received) int { return 200 })
	on := true
	_, err := h.svc.Update(context.Background(), h.account, f.WebhookID, webhooks.Change{Enabled: &on}, accounts.Action{Reason: "fixed"})
	require.NoError(t, err)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		var owed int
		require.NoError(t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1`, f.WebhookID).Scan(&owed))
		return owed == 0, "waiting for the owed deliveries"
	})
}

// TestAddressRulesAtConnectTime: an endpoint whose host resolves to
// loopback (registered while private targets were allowed, as a DNS
// record that changes would) is refused when the deliverer connects.
func TestAddressRulesAtConnectTime(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	rc := newReceiver(t, nil)
	url := strings.Replace(rc.URL, "127.0.0.1", "localhost", 1)
	ep := h.endpoint(url, "OrderAccepted")
	h.start(callbacks.Config{Guard: webhooks.Guard{AllowPrivate: false}, Schedule: []time.Duration{time.Hour}})
	h.messages(1)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
		require.NoError(t, err)
		return len(page) == 1, "waiting for the attempt"
	})
	page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
	require.NoError(t, err)
	require.Contains(t, page[0].Error, "forbidden callback address", "%+v", page[0])
	require.Nil(t, page[0].StatusCode)
	require.Empty(t, rc.all(), "nothing reached the receiver")
}

// TestRedirectsAreNotFollowed: a 3xx is the endpoint's answer (a
// failure), not a hop to elsewhere.
func TestRedirectsAreNotFollowed(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	target := newReceiver(t, nil)
	hop := httptest.NewServer(redirectTo(target.URL))
	t.Cleanup(hop.Close)
	ep := h.endpoint(hop.URL, "OrderAccepted")
	h.run(callbacks.Config{Schedule: []time.Duration{time.Hour}})
	h.messages(1)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		page, _, _ := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
		return len(page) == 1, "waiting for the attempt"
	})
	page, _, _ := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
	require.Equal(t, 307, *page[0].StatusCode)
	require.Equal(t, webhooks.OutcomeFailed, page[0].Outcome)
	require.Empty(t, target.all())
}

// TestRotationOverlap: during the overlap both secrets sign every
// delivery (each verifies alone); after it, only the new one.
func TestRotationOverlap(t *testing.T) {
	h := newHarness(t, webhooks.Config{RotationOverlap: 4 * time.Second})
	rc := newReceiver(t, nil)
	ep := h.endpoint(rc.URL, "OrderAccepted")
	h.run(callbacks.Config{})
	newSecret, expires, err := h.svc.RotateSecret(context.Background(), h.account, ep.WebhookID, accounts.Action{Reason: "yearly"})
	require.NoError(t, err)
	h.messages(1)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return len(rc.all()) == 1, "first delivery" })
	r := rc.all()[0]
	if !r.at.Before(expires) {
		t.Skipf("the machine is too slow today: the first delivery came after the overlap (%s)", r.at.Sub(expires))
	}
	require.Len(t, strings.Fields(r.signature), 2, "two signatures during the overlap")
	require.NoError(t, verify(ep.Secret, r), "the old secret verifies during the overlap")
	require.NoError(t, verify(newSecret, r), "the new secret verifies")
	time.Sleep(time.Until(expires) + 100*time.Millisecond) // the overlap is a time: wait it out
	h.messages(1)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return len(rc.all()) == 2, "second delivery" })
	r = rc.all()[1]
	require.Len(t, strings.Fields(r.signature), 1)
	require.NoError(t, verify(newSecret, r))
	require.Error(t, verify(ep.Secret, r), "the old secret no longer signs")
}

// TestSlowEndpointHoldsBackOnlyItself: an endpoint that never answers
// within the timeout does not delay another endpoint's deliveries.
func TestSlowEndpointHoldsBackOnlyItself(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	release := make(chan struct{})
	slow := newReceiver(t, func(*received) int { <-release; return 200 })
	t.Cleanup(func() { close(release) })
	fast := newReceiver(t, nil)
	h.endpoint(slow.URL)
	h.endpoint(fast.URL)
	h.run(callbacks.Config{Timeout: 6 * time.Second, Concurrency: 4, Schedule: []time.Duration{time.Hour}})
	start := time.Now()
	streams := h.messages(30)
	want := h.events(streams, domain.WebhookEventTypes()...)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return fast.distinct() == len(want), "the fast endpoint's deliveries" })
	// All of them before the slow endpoint's first requests could even
	// time out: nothing of the fast one waited for the slow one.
	require.Less(t, time.Since(start), 6*time.Second, "the fast endpoint waited for the slow one")
	require.LessOrEqual(t, len(slow.all()), 4, "the slow endpoint has at most Concurrency requests in flight")
}

// TestCrashBetweenDeliveryAndRecord: a deliverer killed after sending and
// before recording leaves the deliveries claimed; after its lease another
// one sends them again, with the same webhook-id, and nothing is lost.
func TestCrashBetweenDeliveryAndRecord(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	rc := newReceiver(t, nil)
	ep := h.endpoint(rc.URL)
	blocked := make(chan struct{})
	var once sync.Once
	stop := h.run(callbacks.Config{Lease: 1500 * time.Millisecond, Timeout: 500 * time.Millisecond,
		Hooks: callbacks.Hooks{Abandon: true, BeforeRecord: func(ctx context.Context) { once.Do(func() { close(blocked) }); <-ctx.Done() }}})
	streams := h.messages(10)
	want := h.events(streams, domain.WebhookEventTypes()...)
	<-blocked
	storetest.Poll(t, 10*time.Second, func() (bool, string) { return len(rc.all()) > 0, "a first delivery" })
	stop() // killed: what it sent is not recorded
	before := len(rc.all())
	var logged int
	require.NoError(t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_attempts`).Scan(&logged))
	require.Zero(t, logged)
	h.run(callbacks.Config{Lease: 1500 * time.Millisecond, Timeout: 500 * time.Millisecond})
	storetest.Poll(t, 20*time.Second, func() (bool, string) {
		var owed int
		require.NoError(t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries`).Scan(&owed))
		return rc.distinct() == len(want) && owed == 0, "waiting for every event"
	})
	got := rc.all()
	require.Greater(t, len(got), before)
	seen := map[string]int{}
	for _, r := range got {
		_, ok := want[r.id]
		require.True(t, ok, "a duplicate carries its event's id")
		require.NoError(t, verify(ep.Secret, r))
		seen[r.id]++
	}
	require.Len(t, seen, len(want), "every event delivered")
	dup := 0
	for _, n := range seen {
		dup += n - 1
	}
	require.Greater(t, dup, 0, "the unrecorded ones were sent again")
}

// TestRestartWhileRetriesArePending: a deliverer stopped while retries
// are due later resumes the schedule after a restart: the attempt count
// goes on, nothing starts over, nothing is lost.
func TestRestartWhileRetriesArePending(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	var fail atomic.Bool
	fail.Store(true)
	rc := newReceiver(t, func(*received) int {
		if fail.Load() {
			return 500
		}
		return 200
	})
	ep := h.endpoint(rc.URL, "MessageDelivered")
	cfg := callbacks.Config{Schedule: []time.Duration{time.Second, time.Hour}, BreakerThreshold: 1000}
	stop := h.run(cfg)
	streams := h.messages(5)
	want := h.events(streams, "MessageDelivered")
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		page, _, _ := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeFailed}, 100, "")
		return len(page) == len(want), "first attempts failed"
	})
	stop()
	fail.Store(false)
	h.run(cfg)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		page, _, _ := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeSucceeded}, 100, "")
		return len(page) == len(want), "retries after the restart"
	})
	page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeSucceeded}, 100, "")
	require.NoError(t, err)
	for _, a := range page {
		require.Equal(t, 2, a.Attempt, "the second attempt, not a new first")
	}
	for _, r := range rc.all() {
		if r.call == 2 {
			first := rc.all()
			for _, f := range first {
				if f.id == r.id && f.call == 1 {
					require.GreaterOrEqual(t, r.at.Sub(f.at), 990*time.Millisecond, "the pause held across the restart")
				}
			}
		}
	}
	require.Equal(t, len(want), rc.distinct())
}

// TestRetryAfterAndTheExcerpt: a 503 with Retry-After waits at least that
// long, whatever the schedule says; at most 1 KB of an answer is read and
// kept.
func TestRetryAfterAndTheExcerpt(t *testing.T) {
	h := newHarness(t, webhooks.Config{})
	big := strings.Repeat("x", 5000)
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(big))
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(srv.Close)
	ep := h.endpoint(srv.URL, "OrderAccepted")
	h.run(callbacks.Config{Schedule: []time.Duration{100 * time.Millisecond, 100 * time.Millisecond}})
	h.messages(1)
	storetest.Poll(t, 15*time.Second, func() (bool, string) {
		page, _, _ := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{Outcome: webhooks.OutcomeSucceeded}, 10, "")
		return len(page) == 1, "waiting for the retry"
	})
	page, _, err := h.svc.Attempts(context.Background(), h.account, ep.WebhookID, webhooks.AttemptFilter{}, 10, "")
	require.NoError(t, err)
	require.Len(t, page, 2)
	first, second := page[1], page[0]
	require.Equal(t, 503, *first.StatusCode)
	require.Len(t, first.ResponseExcerpt, 1024, "1 KB of the answer is kept")
	require.WithinDuration(t, first.At.Add(2*time.Second), *first.NextAttemptAt, time.Millisecond, "Retry-After, not the 100 ms of the schedule")
	require.GreaterOrEqual(t, second.At.Sub(first.At), 1990*time.Millisecond)
}
