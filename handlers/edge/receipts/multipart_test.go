package receipts_test

import (
	"encoding/json"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

func TestMultipartDeliveredOnceEveryPartIs(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(2, domain.StateSubmitted)

	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "delivered").part(1, 2)))
	require.Equal(t, domain.StateSubmitted, e.state(id), "one part of two is not the message")
	require.Equal(t, []row{{Part: 1, Status: "delivered", Disposition: "applied", Resolved: true}}, e.rows(id))

	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered").part(1, 2)))
	require.Equal(t, domain.StateSubmitted, e.state(id), "the same part twice is still one part")

	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "delivered").part(2, 2)))
	require.Equal(t, domain.StateDelivered, e.state(id))
	delivered := e.eventsOf(id, "MessageDelivered")
	require.Len(t, delivered, 1)
	ev, err := delivered[0].Decode()
	require.NoError(t, err)
	raw, _ := json.Marshal(rcpt(id, "delivered").part(2, 2))
	require.JSONEq(t, string(raw), string(ev.(domain.MessageDelivered).Receipt), "the event carries the completing part")

	event := delivered[0].ID.String()
	require.Equal(t, []row{
		{Part: 1, Status: "delivered", Disposition: "applied", Event: event, Resolved: true},
		{Part: 1, Status: "delivered", Disposition: "ignored", Reason: "duplicate", Resolved: true},
		{Part: 2, Status: "delivered", Disposition: "applied", Event: event, Resolved: true},
	}, e.rows(id), "both counted parts point at the delivery")
}

func TestMultipartPartsInOneCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(3, domain.StateSubmitted)
	sum := e.mustPost(rcpt(id, "delivered").part(3, 3), rcpt(id, "delivered").part(1, 3),
		rcpt(id, "delivered").part(1, 3), rcpt(id, "delivered").part(2, 3))
	require.Equal(t, receipts.Summary{Received: 4, Applied: 3, Ignored: 1}, sum)
	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Len(t, e.eventsOf(id, "MessageDelivered"), 1)
}

func TestMultipartRepeatedPartsNeverComplete(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(3, domain.StateSubmitted)
	e.mustPost(rcpt(id, "delivered").part(1, 3), rcpt(id, "delivered").part(1, 3))
	e.mustPost(rcpt(id, "delivered").part(1, 3), rcpt(id, "delivered").part(2, 3))
	require.Equal(t, domain.StateSubmitted, e.state(id))
	require.Equal(t, []string{"applied", "ignored", "ignored", "applied"}, dispositions(e.rows(id)))
}

func TestMultipartProviderSplitDecides(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted) // one segment by our count
	e.mustPost(rcpt(id, "delivered").part(1, 2))
	require.Equal(t, domain.StateSubmitted, e.state(id), "the provider sent it as two parts")
	e.mustPost(rcpt(id, "delivered").part(2, 2))
	require.Equal(t, domain.StateDelivered, e.state(id))
}

func TestMultipartOneFailedPartFailsTheMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(2, domain.StateSubmitted)
	e.mustPost(rcpt(id, "delivered").part(1, 2))
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "undeliverable").part(2, 2)))
	m, _ := e.message(id)
	require.Equal(t, domain.StateFailed, m.State)
	require.Equal(t, domain.CodeUndeliverable, m.Failure.Code)
	require.Equal(t, domain.StageDelivery, m.Failure.Stage)

	// Failed first, delivered after: still failed.
	id2 := e.newMessage(2, domain.StateSubmitted)
	e.mustPost(rcpt(id2, "undeliverable").part(1, 2), rcpt(id2, "delivered").part(2, 2))
	require.Equal(t, domain.StateFailed, e.state(id2))
	require.Equal(t, []string{"", "final_state"}, reasons(e.rows(id2)))
}

func TestMultipartTransientPartRetriesTheMessage(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(2, domain.StateSubmitted)
	e.mustPost(rcpt(id, "delivered").part(1, 2), rcpt(id, "failed_temporary").part(2, 2))
	require.Equal(t, domain.StateRetried, e.state(id))

	// The retried attempt's remaining verdicts come too late to matter.
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered").part(2, 2)))
	require.Equal(t, domain.StateRetried, e.state(id))
	require.Equal(t, []string{"", "", "stale_attempt"}, reasons(e.rows(id)))

	// The next attempt starts counting from zero.
	e.step(id, 2, domain.StateQueued)
	e.step(id, 2, domain.StateRouted)
	e.step(id, 2, domain.StateSubmitted)
	e.mustPost(rcpt(id, "delivered").attempt(2).part(1, 2))
	require.Equal(t, domain.StateSubmitted, e.state(id), "attempt 1's delivered part does not count for attempt 2")
	e.mustPost(rcpt(id, "delivered").attempt(2).part(2, 2))
	require.Equal(t, domain.StateDelivered, e.state(id))
}
