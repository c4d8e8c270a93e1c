package receipts_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

// lineUp returns a hook that holds the first try of each of n settlements
// until all n have loaded their messages, so that they all decide from the
// same state and then race for the locks. It gives up waiting after a
// while, so a settlement that never comes fails the test instead of
// hanging it.
func lineUp(t *testing.T, n int) func(try int) {
	var mu sync.Mutex
	arrived := 0
	all := make(chan struct{})
	return func(try int) {
		if try != 1 {
			return
		}
		mu.Lock()
		arrived++
		if arrived == n {
			close(all)
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second):
			t.Errorf("only %d of %d settlements lined up", arrived, n)
		}
	}
}

// postConcurrently posts each body from its own goroutine and returns the
// replies in the same order.
func (e *env) postConcurrently(bodies ...[]wire) []reply {
	out := make([]reply, len(bodies))
	var wg sync.WaitGroup
	for i, rs := range bodies {
		wg.Go(func() {
			b := body(rs...)
			req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/receipts/sim-a", bytes.NewReader(b))
			if err != nil {
				e.t.Error(err)
				return
			}
			req.Header.Set("X-Sandbox-Signature", sign(secretA, e.clock.Now(), b))
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				e.t.Error(err)
				return
			}
			defer res.Body.Close()
			out[i] = reply{status: res.StatusCode}
			if res.StatusCode == http.StatusOK {
				if err := json.NewDecoder(res.Body).Decode(&out[i].summary); err != nil {
					e.t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	return out
}

func TestConcurrentSameReceiptDeliversOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	receipts.SetBeforeLock(e.intake, lineUp(t, 2))
	id := e.newMessage(1, domain.StateSubmitted)

	replies := e.postConcurrently([]wire{rcpt(id, "delivered")}, []wire{rcpt(id, "delivered")})

	require.Equal(t, http.StatusOK, replies[0].status)
	require.Equal(t, http.StatusOK, replies[1].status)
	require.ElementsMatch(t, []receipts.Summary{{Received: 1, Applied: 1}, {Received: 1, Ignored: 1}},
		[]receipts.Summary{replies[0].summary, replies[1].summary})
	require.Len(t, e.eventsOf(id, "MessageDelivered"), 1)
	require.ElementsMatch(t, []string{"", "duplicate"}, reasons(e.rows(id)))
	require.Equal(t, 1.0, e.metric("afterok_receipt_conflicts_total", nil), "the loser saw the winner's append and decided again")
}

func TestConcurrentPartsOfOneMessageDeliverOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	receipts.SetBeforeLock(e.intake, lineUp(t, 2))
	id := e.newMessage(2, domain.StateSubmitted)

	// Neither part appends on its own, so no version changes: only the
	// lock makes the second see the first.
	replies := e.postConcurrently([]wire{rcpt(id, "delivered").part(1, 2)}, []wire{rcpt(id, "delivered").part(2, 2)})

	require.Equal(t, http.StatusOK, replies[0].status)
	require.Equal(t, http.StatusOK, replies[1].status)
	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Len(t, e.eventsOf(id, "MessageDelivered"), 1)
}

func TestConcurrentSubmissionIsSeen(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateRouted)
	// The worker's MessageSubmitted lands after the intake loaded the
	// message as routed: the receipt must not be parked on stale state
	// (the worker's ApplyParked has already run and found nothing).
	receipts.SetBeforeLock(e.intake, func(try int) {
		if try == 1 {
			appendBehind(t, e, id, domain.MessageSubmitted{Attempt: 1, Provider: "sim-a", ProviderMessageID: pmid(id, 1)})
		}
	})
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "delivered")))
	require.Equal(t, domain.StateDelivered, e.state(id))
}

func TestConcurrentExpiryWins(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	receipts.SetBeforeLock(e.intake, func(try int) {
		if try == 1 {
			appendBehind(t, e, id, domain.MessageFailed{Attempt: 1, Failure: domain.Failure{
				Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true}})
		}
	})
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered")))
	require.Equal(t, domain.StateFailed, e.state(id))
	require.Empty(t, e.eventsOf(id, "MessageDelivered"))
	require.Equal(t, []string{"final_state"}, reasons(e.rows(id)))
	require.Equal(t, 1.0, e.metric("afterok_receipt_conflicts_total", nil))
}

func TestStillConflictingAnswers503(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *receipts.Config) { c.ConflictRetries = 3 })
	id := e.newMessage(1, domain.StateSubmitted)
	// Every try, the message moves on under the intake.
	moves := []domain.Event{
		domain.MessageRetried{Attempt: 1, NextAttempt: 2, Failure: domain.Failure{Code: domain.CodeTimeout}},
		domain.MessageQueued{Attempt: 2},
		domain.MessageRouted{Attempt: 2, Route: domain.RouteDecision{Provider: "sim-a"}},
	}
	var tries atomic.Int32
	receipts.SetBeforeLock(e.intake, func(try int) {
		tries.Store(int32(try))
		if try <= len(moves) {
			appendBehind(t, e, id, moves[try-1])
		}
	})
	r := e.post(rcpt(id, "delivered").attempt(2))
	require.Equal(t, http.StatusServiceUnavailable, r.status)
	require.Equal(t, "unavailable", r.problem["code"])
	require.Equal(t, int32(3), tries.Load())
	require.Zero(t, e.receiptCount(), "nothing of a refused callback is kept: the provider sends it again")
	require.Equal(t, 3.0, e.metric("afterok_receipt_conflicts_total", nil))

	// The provider's retry, once things are calm, is parked.
	receipts.SetBeforeLock(e.intake, nil)
	require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered").attempt(2)))
}

// appendBehind appends an event to a message stream from inside a hook,
// where require's FailNow must not be called.
func appendBehind(t *testing.T, e *env, id string, ev domain.Event) {
	_, err := e.store.Append(context.Background(), domain.MessageStream(id), eventstore.Any,
		eventstore.MustEvent(ev, md("")))
	if err != nil {
		t.Errorf("append behind the intake: %v", err)
	}
}
