package receipts_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

func TestReceiptBeforeSubmissionIsParkedThenApplied(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateRouted)
	other := e.newMessage(1, domain.StateSubmitted)

	require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered")))
	require.Equal(t, domain.StateRouted, e.state(id))
	require.Equal(t, []row{{Part: 1, Status: "delivered", Disposition: "parked"}}, e.rows(id))
	parked, err := e.intake.Parked(e.ctx, 10)
	require.NoError(t, err)
	require.Len(t, parked, 1)
	require.Equal(t, id, parked[0].MessageID)
	require.Equal(t, "delivered", parked[0].Status)
	require.Equal(t, pmid(id, 1), parked[0].ProviderMessageID)
	raw, _ := json.Marshal(rcpt(id, "delivered"))
	require.JSONEq(t, string(raw), string(parked[0].Raw))

	// A repeat of the parked receipt is not parked twice.
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered")))

	e.step(id, 1, domain.StateSubmitted)
	require.NoError(t, e.intake.ApplyParked(e.ctx, []string{id, other}))

	require.Equal(t, domain.StateDelivered, e.state(id))
	delivered := e.eventsOf(id, "MessageDelivered")
	require.Len(t, delivered, 1)
	require.Equal(t, []row{
		{Part: 1, Status: "delivered", Disposition: "applied", Event: delivered[0].ID.String(), Resolved: true},
		{Part: 1, Status: "delivered", Disposition: "ignored", Reason: "duplicate", Resolved: true},
	}, e.rows(id))
	require.Equal(t, domain.StateSubmitted, e.state(other), "a message with nothing parked is left alone")
	parked, err = e.intake.Parked(e.ctx, 10)
	require.NoError(t, err)
	require.Empty(t, parked)
	require.Equal(t, 1.0, e.metric("afterok_receipts_unparked_total", map[string]string{"provider": "sim-a", "disposition": "applied"}))

	// Again: nothing left to do.
	require.NoError(t, e.intake.ApplyParked(e.ctx, []string{id}))
	require.Len(t, e.eventsOf(id, "MessageDelivered"), 1)
	require.NoError(t, e.intake.ApplyParked(e.ctx, nil))
}

func TestParkedWhereverTheSubmissionIsStillToCome(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name    string
		attempt int
		setup   func(e *env) string
	}{
		{"accepted", 1, func(e *env) string { return e.newMessage(1, domain.StateAccepted) }},
		{"queued", 1, func(e *env) string { return e.newMessage(1, domain.StateQueued) }},
		{"routed", 1, func(e *env) string { return e.newMessage(1, domain.StateRouted) }},
		{"retried, waiting for the next attempt", 2, func(e *env) string {
			id := e.newMessage(1, domain.StateRouted)
			e.step(id, 1, domain.StateRetried)
			return id
		}},
		{"submitted, receipt for the next attempt", 2, func(e *env) string { return e.newMessage(1, domain.StateSubmitted) }},
	}
	e := newEnv(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id := c.setup(e)
			before := e.state(id)
			require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered").attempt(c.attempt)))
			require.Equal(t, before, e.state(id))
			require.Equal(t, []string{"parked"}, dispositions(e.rows(id)))
		})
	}
}

func TestParkedReceiptsApplyInArrivalOrder(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A transient failure, then a delivery, of the same attempt: the
	// failure retried the attempt before the delivery could count.
	a := e.newMessage(1, domain.StateQueued)
	require.Equal(t, receipts.Summary{Received: 2, Parked: 2}, e.mustPost(rcpt(a, "failed_temporary"), rcpt(a, "delivered")))
	// The same two the other way round: the delivery is final.
	b := e.newMessage(1, domain.StateQueued)
	e.mustPost(rcpt(b, "delivered"))
	e.mustPost(rcpt(b, "failed_temporary"))

	for _, id := range []string{a, b} {
		e.step(id, 1, domain.StateRouted)
		e.step(id, 1, domain.StateSubmitted)
	}
	require.NoError(t, e.intake.ApplyParked(e.ctx, []string{a, b}))

	require.Equal(t, domain.StateRetried, e.state(a))
	require.Empty(t, e.eventsOf(a, "MessageDelivered"))
	require.Equal(t, []string{"applied", "ignored"}, dispositions(e.rows(a)))
	require.Equal(t, []string{"", "stale_attempt"}, reasons(e.rows(a)))

	require.Equal(t, domain.StateDelivered, e.state(b))
	require.Empty(t, e.eventsOf(b, "MessageRetried"))
	require.Equal(t, []string{"", "final_state"}, reasons(e.rows(b)))
}

func TestCallbackAppliesTheParkedReceiptsOfItsMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(2, domain.StateRouted)
	require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered").part(1, 2)))
	e.step(id, 1, domain.StateSubmitted) // and the worker dies before ApplyParked

	// The second part arrives: the parked first part counts with it.
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "delivered").part(2, 2)))
	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Equal(t, []string{"applied", "applied"}, dispositions(e.rows(id)))
}

func TestSweepAppliesWhatApplyParkedMissed(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateAccepted)
	e.mustPost(rcpt(id, "delivered"))

	n, err := e.intake.Sweep(e.ctx)
	require.NoError(t, err)
	require.Zero(t, n, "nothing moved")
	require.Equal(t, 1.0, e.metric("afterok_receipts_parked", nil))

	// The message moves, but not to its submission: still parked, and
	// looked at again only when it moves once more.
	e.step(id, 1, domain.StateQueued)
	n, err = e.intake.Sweep(e.ctx)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, []string{"parked"}, dispositions(e.rows(id)))
	var checked int
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT checked_version FROM receipts WHERE message_id = $1`, id).Scan(&checked))
	require.Equal(t, 2, checked)

	e.step(id, 1, domain.StateRouted)
	e.step(id, 1, domain.StateSubmitted) // no ApplyParked: the worker crashed
	n, err = e.intake.Sweep(e.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Equal(t, 0.0, e.metric("afterok_receipts_parked", nil))
}

func TestSweepResolvesReceiptsOfMessagesThatEnded(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateRouted)
	e.mustPost(rcpt(id, "delivered"))
	e.append(id, domain.MessageFailed{Attempt: 1, At: e.clock.Now(), Failure: domain.Failure{
		Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true}})

	n, err := e.intake.Sweep(e.ctx)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	require.Equal(t, domain.StateFailed, e.state(id))
	require.Equal(t, []row{{Part: 1, Status: "delivered", Disposition: "ignored", Reason: "final_state", Resolved: true}}, e.rows(id))
}

func TestRunSweeper(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateRouted)
	e.mustPost(rcpt(id, "delivered"))

	ctx, cancel := context.WithCancel(e.ctx)
	var wg sync.WaitGroup
	var runErr error
	wg.Go(func() { runErr = e.intake.RunSweeper(ctx, 10*time.Millisecond) })
	defer func() {
		cancel()
		wg.Wait()
		require.NoError(t, runErr)
	}()

	e.step(id, 1, domain.StateSubmitted)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		return len(e.eventsOf(id, "MessageDelivered")) == 1, "the parked receipt applied once"
	})
	require.Equal(t, domain.StateDelivered, e.state(id))

	require.Error(t, e.intake.RunSweeper(ctx, 0), "an interval of 0 is a mistake, not a busy loop")
}

func TestParkedListsTheOldestFirst(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var ids []string
	for range 3 {
		id := e.newMessage(1, domain.StateQueued)
		e.mustPost(rcpt(id, "delivered"))
		e.clock.set(e.clock.Now().Add(time.Second))
		ids = append(ids, id)
	}
	parked, err := e.intake.Parked(e.ctx, 2)
	require.NoError(t, err)
	require.Len(t, parked, 2)
	require.Equal(t, ids[:2], []string{parked[0].MessageID, parked[1].MessageID})
	require.True(t, parked[0].ReceivedAt.Before(parked[1].ReceivedAt))
}
