package dispatch_test

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
)

// TestWorkerRecordsEachProviderAnswer: what a worker records for each kind
// of answer a provider gives to attempt 1, and that it acknowledges the job
// once that is committed. A transient failure retries (the provider is
// excluded from the next attempt unless it only throttled us), a permanent
// one fails the message; neither is decided by the HTTP status alone.
func TestWorkerRecordsEachProviderAnswer(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	tests := []struct {
		name   string
		answer answer
		// want is the event after MessageRouted; failure its failure.
		want         string
		failure      domain.Failure
		reasonPrefix string
	}{
		{name: "accepted", answer: answer{}, want: "MessageSubmitted"},
		{name: "permanent rejection", answer: answer{status: 400, body: `{"error":{"code":"invalid_destination","message":"no such number"}}`},
			want: "MessageFailed", failure: domain.Failure{Code: domain.CodeInvalidDestination, Stage: domain.StageSubmit, Permanent: true,
				Provider: "sim-a", ProviderCode: "invalid_destination", Reason: "no such number"}},
		{name: "transient failure", answer: answer{status: 503, body: `{"error":{"code":"unavailable","message":"try later"}}`},
			want: "MessageRetried", failure: domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageSubmit,
				Provider: "sim-a", ProviderCode: "unavailable", Reason: "try later"}},
		{name: "throttled", answer: answer{status: 429, header: map[string]string{"Retry-After": "7"}},
			want: "MessageRetried", failure: domain.Failure{Code: domain.CodeThrottled, Stage: domain.StageSubmit,
				Provider: "sim-a", ProviderCode: "http_429", Reason: "Too Many Requests (provider asked to retry after 7s)"}},
		{name: "server error", answer: answer{status: 500, body: `oops`},
			want: "MessageRetried", failure: domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageSubmit,
				Provider: "sim-a", ProviderCode: "http_500", Reason: "Internal Server Error"}},
		{name: "malformed answer", answer: answer{status: 200, body: `{"id":`},
			want: "MessageRetried", failure: domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageSubmit,
				Provider: "sim-a"}, reasonPrefix: "malformed answer: "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := r.message(t, time.Now().Add(time.Hour))
			r.provider.expect(id, tc.answer)
			seq := r.publish(t, id, 1)
			types, evs := r.waitEvents(t, id, 4)
			require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted", tc.want}, types)
			require.Equal(t, "sim-a", evs[2].(domain.MessageRouted).Route.Provider)
			var got domain.Failure
			switch ev := evs[3].(type) {
			case domain.MessageSubmitted:
				require.Equal(t, "sim-a", ev.Provider)
				require.Equal(t, "p-sim-a-0", ev.ProviderMessageID)
			case domain.MessageFailed:
				got = ev.Failure
			case domain.MessageRetried:
				require.Equal(t, 1, ev.Attempt)
				require.Equal(t, 2, ev.NextAttempt)
				got = ev.Failure
			}
			if tc.reasonPrefix != "" {
				require.True(t, strings.HasPrefix(got.Reason, tc.reasonPrefix), got.Reason)
				got.Reason = ""
			}
			require.Equal(t, tc.failure, got)
			r.waitAcked(t, seq)
			require.Equal(t, []call{{"sim-a", id + ":1", 1}}, r.provider.callsOf(id), "one submission, keyed by the attempt")
		})
	}
}

// TestWorkerResubmitsAnUnknownOutcome: a submission that times out may have
// been accepted, so the worker records nothing and lets the job come back:
// the same attempt is resubmitted with the same idempotency key, never a
// second attempt (which the provider could not recognise as a repeat).
func TestWorkerResubmitsAnUnknownOutcome(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	id := r.message(t, time.Now().Add(time.Hour))
	r.provider.expect(id, answer{delay: 2 * rigTimeout}, answer{})
	seq := r.publish(t, id, 1)
	types, _ := r.waitEvents(t, id, 4)
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted", "MessageSubmitted"}, types)
	r.waitAcked(t, seq)
	require.Equal(t, []call{{"sim-a", id + ":1", 1}, {"sim-a", id + ":1", 1}}, r.provider.callsOf(id))
}

// TestWorkerResubmitsARoutedAttempt: a job redelivered after its route was
// recorded (the worker died between the two) is submitted on that route
// without routing again, under the same idempotency key.
func TestWorkerResubmitsARoutedAttempt(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	id := r.message(t, time.Now().Add(time.Hour))
	r.record(t, id, func(m *domain.Message) (domain.Event, error) {
		return m.Route(domain.RouteDecision{RouteID: "default", Provider: "sim-b", Reason: "recorded before the crash"}, time.Now())
	})
	seq := r.publish(t, id, 1)
	types, evs := r.waitEvents(t, id, 4)
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted", "MessageSubmitted"}, types)
	require.Equal(t, "sim-b", evs[3].(domain.MessageSubmitted).Provider)
	r.waitAcked(t, seq)
	require.Equal(t, []call{{"sim-b", id + ":1", 1}}, r.provider.callsOf(id))
}

// TestWorkerFailsOverThenExhaustsAttempts: the attempt after a provider's
// transient failure is routed to the next provider; when that attempt is
// the last the policy allows and fails too, the message fails with
// attempts_exhausted, keeping the last failure's stage and provider.
func TestWorkerFailsOverThenExhaustsAttempts(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	unavailable := answer{status: 503, body: `{"error":{"code":"unavailable"}}`}
	for _, tc := range []struct {
		name   string
		second answer
		want   string
	}{
		{"failover succeeds", answer{}, "MessageSubmitted"},
		{"attempts exhausted", unavailable, "MessageFailed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			id := r.message(t, time.Now().Add(time.Hour))
			r.provider.expect(id, unavailable, tc.second)
			r.waitAcked(t, r.publish(t, id, 1))
			// What the scheduler does once the retry is due.
			r.record(t, id, func(m *domain.Message) (domain.Event, error) { return m.Queue("job-2", time.Now()) })
			seq := r.publish(t, id, 2)
			types, evs := r.waitEvents(t, id, 7)
			require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageRouted", "MessageRetried",
				"MessageQueued", "MessageRouted", tc.want}, types)
			route := evs[5].(domain.MessageRouted)
			require.Equal(t, 2, route.Attempt)
			require.Equal(t, "sim-b", route.Route.Provider, "sim-a failed this message: excluded")
			if f, ok := evs[6].(domain.MessageFailed); ok {
				require.Equal(t, domain.CodeAttemptsExhausted, f.Failure.Code)
				require.Equal(t, domain.StageSubmit, f.Failure.Stage)
				require.Equal(t, "sim-b", f.Failure.Provider)
				require.True(t, f.Failure.Permanent)
			}
			r.waitAcked(t, seq)
			require.Equal(t, []call{{"sim-a", id + ":1", 1}, {"sim-b", id + ":2", 2}}, r.provider.callsOf(id))
		})
	}
}

// TestWorkerFailsAnExpiredMessageBeforeRouting: a job taken after the
// message's validity ended fails it as expired without asking a provider.
func TestWorkerFailsAnExpiredMessageBeforeRouting(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	id := r.message(t, time.Now().Add(-time.Second))
	seq := r.publish(t, id, 1)
	types, evs := r.waitEvents(t, id, 3)
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageFailed"}, types)
	f := evs[2].(domain.MessageFailed).Failure
	require.Equal(t, domain.CodeExpired, f.Code)
	require.Equal(t, domain.StageExpiry, f.Stage)
	require.True(t, f.Permanent)
	r.waitAcked(t, seq)
	require.Empty(t, r.provider.callsOf(id))
}

// TestWorkerAcksAStaleJob: a job for an attempt already done (a duplicate
// that outlived the stream's window, a late redelivery) is acknowledged
// and changes nothing.
func TestWorkerAcksAStaleJob(t *testing.T) {
	t.Parallel()
	r := newWorkerRig(t)
	id := r.message(t, time.Now().Add(time.Hour))
	r.waitAcked(t, r.publish(t, id, 1))
	r.waitEvents(t, id, 4)
	// The same attempt again, under another deduplication id.
	ack, err := r.nats.JS.Publish(t.Context(), r.nats.Names.DispatchSubject(id),
		[]byte(`{"message_id":"`+id+`","attempt":1,"account_id":"acc"}`))
	require.NoError(t, err)
	r.waitAcked(t, ack.Sequence)
	types, _ := r.events(t, id)
	require.Len(t, types, 4)
	require.Len(t, r.provider.callsOf(id), 1)
}
