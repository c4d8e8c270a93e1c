package receipts_test

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

func TestAuthentication(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	b := body(rcpt(id, "delivered"))
	now := e.clock.Now()
	cases := []struct {
		name      string
		provider  string
		signature string
		body      []byte
		status    int
		code      string
		refused   string // afterok_receipt_requests_refused_total reason
	}{
		{"wrong secret", "sim-a", sign([]byte("guess"), now, b), b, 401, "unauthenticated", "signature_mismatch"},
		{"other provider's secret", "sim-a", sign(secretB, now, b), b, 401, "unauthenticated", "signature_mismatch"},
		{"stale", "sim-a", sign(secretA, now.Add(-2*time.Minute), b), b, 401, "unauthenticated", "signature_stale"},
		{"no signature", "sim-a", "", b, 401, "unauthenticated", "signature_missing"},
		{"garbled signature", "sim-a", "t=1,v1=zz", b, 401, "unauthenticated", "signature_malformed"},
		{"body changed after signing", "sim-a", sign(secretA, now, b), append([]byte(" "), b...), 401, "unauthenticated", "signature_mismatch"},
		{"unknown provider", "sim-x", sign(secretA, now, b), b, 401, "unauthenticated", "unknown_provider"},
		{"malformed receipts", "sim-a", sign(secretA, now, []byte(`{"receipts":{"id":"x"}}`)), []byte(`{"receipts":{"id":"x"}}`), 400, "invalid_request", "malformed"},
		{"not JSON", "sim-a", sign(secretA, now, []byte(`receipts`)), []byte(`receipts`), 400, "invalid_request", "malformed"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			label := "sim-a"
			if c.provider != "sim-a" {
				label = "unknown"
			}
			series := map[string]string{"provider": label, "reason": c.refused}
			before := e.metric("afterok_receipt_requests_refused_total", series)
			r := e.postRaw(c.provider, c.signature, c.body)
			require.Equal(t, c.status, r.status, "problem: %v", r.problem)
			require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
			require.Equal(t, c.code, r.problem["code"])
			require.Equal(t, before+1, e.metric("afterok_receipt_requests_refused_total", series))
			if c.status == 401 {
				require.NotContains(t, r.problem["detail"], "signature", "a refusal must not say why")
			}
		})
	}
	require.Zero(t, e.receiptCount(), "a refused callback records nothing")
	require.Equal(t, domain.StateSubmitted, e.state(id))

	// The same body, correctly signed, goes through.
	r := e.postRaw("sim-a", sign(secretA, now, b), b)
	require.Equal(t, http.StatusOK, r.status, "problem: %v", r.problem)
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, r.summary)
	// And a provider signs with its own secret, not another's.
	id2 := e.newMessage(1, domain.StateSubmitted)
	b2 := body(rcpt(id2, "delivered"))
	require.Equal(t, http.StatusOK, e.postRaw("sim-b", sign(secretB, now, b2), b2).status)
}

func TestTooLargeBodyIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, func(c *receipts.Config) { c.MaxBodyBytes = 64 })
	id := e.newMessage(1, domain.StateSubmitted)
	r := e.post(rcpt(id, "delivered"))
	require.Equal(t, http.StatusRequestEntityTooLarge, r.status)
	require.Equal(t, "too_large", r.problem["code"])
	require.Zero(t, e.receiptCount())
}

// TestOneBadReceiptDoesNotHoldBackTheBatch: integers out of range and NUL
// in a receipt used to be a 500 (the store refused them at commit), and
// any bad receipt failed its whole callback, so a provider that retried
// could never get the good receipts of it through. Now each bad receipt is
// refused alone, recorded, and reported in the answer; the rest applies.
func TestOneBadReceiptDoesNotHoldBackTheBatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b := e.newMessage(1, domain.StateSubmitted), e.newMessage(1, domain.StateSubmitted)
	good := func(id string) string {
		raw, _ := json.Marshal(rcpt(id, "delivered"))
		return string(raw)
	}
	with := func(id, field, value string) string {
		return strings.Replace(good(id), `"`+field+`":`, `"`+field+`":`+value+`,"x-`+field+`":`, 1)
	}
	bad := []string{
		strings.Replace(good(b), `"attempt":1`, `"attempt":2147483648`, 1),
		strings.Replace(good(b), `"parts":1`, `"parts":4611686018427387904`, 1),
		strings.Replace(good(b), `"part":1`, `"part":4611686018427387904`, 1),
		with(b, "id", `"p\u0000"`),
		strings.Replace(good(b), `}`, `,"carrier":{"note":"\u0000"}}`, 1),
		strings.Replace(good(b), `"status":"delivered"`, "\"status\":\"delivered\",\"error_code\":\"\xff\"", 1),
	}
	items := append([]string{good(a)}, bad...)
	items = append(items, good(b))
	raw := []byte(`{"receipts":[` + strings.Join(items, ",") + `]}`)
	r := e.postRaw("sim-a", sign(secretA, e.clock.Now(), raw), raw)
	require.Equal(t, http.StatusOK, r.status, "problem: %v", r.problem)
	require.Equal(t, len(items), r.summary.Received)
	require.Equal(t, 2, r.summary.Applied)
	require.Equal(t, len(bad), r.summary.Refused)
	require.Len(t, r.summary.Refusals, len(bad))
	for i, f := range r.summary.Refusals {
		require.Equal(t, i+1, f.Index)
		require.NotEmpty(t, f.Code)
		require.NotEmpty(t, f.Problem)
	}
	require.Equal(t, "attempt", r.summary.Refusals[0].Field)
	require.Equal(t, "out_of_range", r.summary.Refusals[0].Code)
	require.Equal(t, "invalid_text", r.summary.Refusals[3].Code)
	require.Equal(t, domain.StateDelivered, e.state(a))
	require.Equal(t, domain.StateDelivered, e.state(b))

	// Recorded as sent, with the callback's request id.
	rows, err := e.db.Pool.Query(e.ctx, `SELECT provider, item, code, raw, request_id <> '' FROM receipt_refusals ORDER BY item`)
	require.NoError(t, err)
	defer rows.Close()
	i := 0
	for rows.Next() {
		var prov, code string
		var item int
		var stored []byte
		var hasRequest bool
		require.NoError(t, rows.Scan(&prov, &item, &code, &stored, &hasRequest))
		require.Equal(t, "sim-a", prov)
		require.Equal(t, i+1, item)
		require.Equal(t, r.summary.Refusals[i].Code, code)
		require.Equal(t, bad[i], string(stored), "kept byte for byte")
		require.True(t, hasRequest)
		i++
	}
	require.NoError(t, rows.Err())
	require.Equal(t, len(bad), i)
	require.Equal(t, 3.0, e.metric("afterok_receipts_refused_total", map[string]string{"provider": "sim-a", "code": "out_of_range"}))
	require.Equal(t, 2, e.receiptCount(), "only usable receipts enter the receipts table")

	// A callback of refused receipts only is answered too, and recorded.
	raw = []byte(`{"receipts":[` + bad[0] + `]}`)
	r = e.postRaw("sim-a", sign(secretA, e.clock.Now(), raw), raw)
	require.Equal(t, http.StatusOK, r.status, "problem: %v", r.problem)
	require.Equal(t, receipts.Summary{Received: 1, Refused: 1, Refusals: r.summary.Refusals}, r.summary)
	var n int
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT count(*) FROM receipt_refusals`).Scan(&n))
	require.Equal(t, len(bad)+1, n)
}

func TestEmptyCallback(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.Equal(t, receipts.Summary{}, e.mustPost())
}

func TestDelivered(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	m, _ := e.message(id)
	sum := e.mustPost(rcpt(id, "delivered"))
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, sum)

	require.Equal(t, domain.StateDelivered, e.state(id))
	delivered := e.eventsOf(id, "MessageDelivered")
	require.Len(t, delivered, 1)
	ev, err := delivered[0].Decode()
	require.NoError(t, err)
	d := ev.(domain.MessageDelivered)
	require.Equal(t, 1, d.Attempt)
	require.Equal(t, "sim-a", d.Provider)
	require.Equal(t, pmid(id, 1), d.ProviderMessageID)
	require.True(t, d.DoneAt.Equal(time.Date(2026, 1, 2, 3, 4, 5, 123e6, time.UTC)))
	require.True(t, d.At.Equal(e.clock.Now()))
	raw, _ := json.Marshal(rcpt(id, "delivered"))
	require.JSONEq(t, string(raw), string(d.Receipt), "the event keeps the raw receipt")

	md := delivered[0].Metadata
	require.Equal(t, "provider:sim-a", md.Actor)
	require.Equal(t, m.OrderID, md.CorrelationID)
	require.Equal(t, pmid(id, 1), md.CausationID)
	require.Equal(t, "acct-1", md.AccountID)
	require.Equal(t, "acct-1", delivered[0].AccountID, "the event is the account's")

	rows := e.rows(id)
	require.Equal(t, []row{{Part: 1, Status: "delivered", Disposition: "applied", Event: delivered[0].ID.String(), Resolved: true}}, rows)
	var stored json.RawMessage
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT raw FROM receipts WHERE message_id = $1`, id).Scan(&stored))
	require.JSONEq(t, string(raw), string(stored), "the row keeps the raw receipt")
	require.Equal(t, 1.0, e.metric("afterok_receipts_total", map[string]string{"provider": "sim-a", "disposition": "applied"}))
}

func TestPermanentFailure(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	w := rcpt(id, "undeliverable")
	w.ErrorCode = "unknown_subscriber"
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(w))

	m, _ := e.message(id)
	require.Equal(t, domain.StateFailed, m.State)
	require.Equal(t, domain.Failure{Code: domain.CodeUndeliverable, Reason: "provider reported undeliverable (unknown_subscriber)",
		Stage: domain.StageDelivery, Permanent: true, Provider: "sim-a", ProviderCode: "unknown_subscriber"}, *m.Failure)
	failed := e.eventsOf(id, "MessageFailed")
	require.Len(t, failed, 1)
	ev, _ := failed[0].Decode()
	require.Contains(t, string(ev.(domain.MessageFailed).Receipt), `"unknown_subscriber"`)
}

func TestTransientFailureIsRetriedByThePolicy(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "failed_temporary")))

	m, _ := e.message(id)
	require.Equal(t, domain.StateRetried, m.State)
	require.Equal(t, 2, m.NextAttempt)
	failure := domain.Failure{Code: domain.CodeDeliveryDelayed, Reason: "provider reported failed_temporary",
		Stage: domain.StageDelivery, Provider: "sim-a", ProviderCode: "failed_temporary"}
	want := e.policy.Next(routing.RetryInput{MessageID: id, Attempt: 1, Failure: failure, Now: e.clock.Now(), ExpiresAt: m.ExpiresAt})
	require.True(t, want.Retry)
	require.True(t, m.NotBefore.Equal(want.NotBefore), "not before %s, want %s", m.NotBefore, want.NotBefore)
	require.True(t, m.NotBefore.After(e.clock.Now()))
	require.Equal(t, failure, *m.Failure)
	require.Len(t, e.eventsOf(id, "MessageRetried"), 1)
}

func TestTransientFailureOfTheLastAttemptFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t) // MaxAttempts 3
	id := e.newMessage(1, domain.StateSubmitted)
	for attempt := 1; attempt < 3; attempt++ {
		e.step(id, attempt, domain.StateRetried)
		e.step(id, attempt+1, domain.StateQueued)
		e.step(id, attempt+1, domain.StateRouted)
		e.step(id, attempt+1, domain.StateSubmitted)
	}
	require.Equal(t, receipts.Summary{Received: 1, Applied: 1}, e.mustPost(rcpt(id, "failed_temporary").attempt(3)))

	m, _ := e.message(id)
	require.Equal(t, domain.StateFailed, m.State)
	require.Equal(t, domain.CodeAttemptsExhausted, m.Failure.Code)
	require.Equal(t, domain.StageDelivery, m.Failure.Stage)
	require.True(t, m.Failure.Permanent)
	require.Empty(t, e.eventsOf(id, "MessageDelivered"))
}

func TestTransientFailureNearExpiryFails(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	e.clock.set(e.clock.Now().Add(time.Hour - time.Second)) // the next attempt could not start in time
	e.mustPost(rcpt(id, "failed_temporary"))
	m, _ := e.message(id)
	require.Equal(t, domain.StateFailed, m.State)
	require.Equal(t, domain.CodeExpired, m.Failure.Code)
}

func TestLateReceiptsNeverChangeAFinalState(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	e.mustPost(rcpt(id, "delivered"))

	// The provider sends the same callback again, then a contradicting one.
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered")))
	require.Equal(t, receipts.Summary{Received: 2, Ignored: 2}, e.mustPost(rcpt(id, "undeliverable"), rcpt(id, "failed_temporary")))

	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Len(t, e.events(id), 5, "accepted, queued, routed, submitted, delivered and nothing else")
	rows := e.rows(id)
	require.Len(t, rows, 4)
	require.Equal(t, []string{"applied", "ignored", "ignored", "ignored"}, dispositions(rows))
	require.Equal(t, []string{"", "duplicate", "final_state", "final_state"}, reasons(rows))
	require.Equal(t, 2.0, e.metric("afterok_receipts_total", map[string]string{"provider": "sim-a", "disposition": "ignored", "reason": "final_state"}))
}

func TestStaleAttempt(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted)
	e.mustPost(rcpt(id, "failed_temporary")) // attempt 1 is retried

	// A late receipt for the retried attempt: its verdict came too late.
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt(id, "delivered")))
	require.Equal(t, domain.StateRetried, e.state(id))

	e.step(id, 2, domain.StateQueued)
	e.step(id, 2, domain.StateRouted)
	e.step(id, 2, domain.StateSubmitted)
	// Attempt 1 again, now that attempt 2 is under way; then attempt 2's.
	require.Equal(t, receipts.Summary{Received: 2, Applied: 1, Ignored: 1},
		e.mustPost(rcpt(id, "undeliverable"), rcpt(id, "delivered").attempt(2)))
	require.Equal(t, domain.StateDelivered, e.state(id))
	require.Equal(t, []string{"", "stale_attempt", "stale_attempt", ""}, reasons(e.rows(id)))
}

func TestUnknownMessageIsKeptAsIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(rcpt("01NOSUCHMESSAGE", "delivered")))
	require.Equal(t, []row{{Part: 1, Status: "delivered", Disposition: "ignored", Reason: "unknown_message", Resolved: true}},
		e.rows("01NOSUCHMESSAGE"))
}

func TestAnotherProvidersReceiptIsIgnored(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	id := e.newMessage(1, domain.StateSubmitted) // submitted to sim-a
	b := body(rcpt(id, "delivered"))
	r := e.postRaw("sim-b", sign(secretB, e.clock.Now(), b), b)
	require.Equal(t, http.StatusOK, r.status)
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, r.summary)
	require.Equal(t, domain.StateSubmitted, e.state(id))

	// sim-a, but for a provider message id that is not the attempt's.
	w := rcpt(id, "delivered")
	w.ID = "sim-a-something-else"
	require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, e.mustPost(w))
	require.Equal(t, []string{"provider_mismatch", "provider_mismatch"}, reasons(e.rows(id)))
	require.Equal(t, domain.StateSubmitted, e.state(id))
}

func TestOneCallbackForManyMessages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	a, b, c := e.newMessage(1, domain.StateSubmitted), e.newMessage(1, domain.StateSubmitted), e.newMessage(1, domain.StateRouted)
	sum := e.mustPost(rcpt(a, "delivered"), rcpt(b, "undeliverable"), rcpt(c, "delivered"), rcpt(a, "delivered"))
	require.Equal(t, receipts.Summary{Received: 4, Applied: 2, Parked: 1, Ignored: 1}, sum)
	require.Equal(t, domain.StateDelivered, e.state(a))
	require.Equal(t, domain.StateFailed, e.state(b))
	require.Equal(t, domain.StateRouted, e.state(c))
}

func dispositions(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Disposition
	}
	return out
}

func reasons(rows []row) []string {
	out := make([]string, len(rows))
	for i, r := range rows {
		out[i] = r.Reason
	}
	return out
}

func TestLogsNameTheMessage(t *testing.T) {
	t.Parallel()
	var logs storetest.Logs
	e := newEnv(t, func(c *receipts.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	id := e.newMessage(1, domain.StateSubmitted)
	m, _ := e.message(id)
	e.mustPost(rcpt(id, "failed_temporary"))
	e.mustPost(rcpt(id, "delivered")) // too late: attempt 1 was retried

	var warned map[string]any
	for _, l := range logs.Lines() {
		if l["level"] == "WARN" {
			warned = l
		}
	}
	require.NotNil(t, warned, "a delivery for a retried attempt is worth a warning")
	require.Equal(t, id, warned["message_id"])
	require.Equal(t, m.OrderID, warned["order_id"])
	require.Equal(t, 1.0, warned["attempt"])
	require.Equal(t, "sim-a", warned["provider"])
	require.Equal(t, "stale_attempt", warned["reason"])
}

// TestAnotherProvidersReceiptCannotShadow: a provider may sign receipts
// for any message id with its own valid secret. Such a receipt for a
// message routed to another provider must never be parked where it would
// make the genuine receipt a "duplicate": that suppressed sim-a's
// delivered receipt and the message ended failed{expired}.
func TestAnotherProvidersReceiptCannotShadow(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	postB := func(w wire) receipts.Summary {
		t.Helper()
		b := body(w)
		r := e.postRaw("sim-b", sign(secretB, e.clock.Now(), b), b)
		require.Equal(t, http.StatusOK, r.status, "%v", r.problem)
		return r.summary
	}

	t.Run("routed: refused at once, never parked", func(t *testing.T) {
		id := e.newMessage(1, domain.StateRouted) // routed to sim-a, not yet submitted
		require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, postB(rcpt(id, "undeliverable")))
		require.Equal(t, receipts.Summary{Received: 1, Ignored: 1}, postB(rcpt(id, "delivered")))
		require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered")), "sim-a's own receipt waits")
		e.step(id, 1, domain.StateSubmitted)
		require.NoError(t, e.intake.ApplyParked(e.ctx, []string{id}))
		require.Equal(t, domain.StateDelivered, e.state(id))
		require.Equal(t, []string{"provider_mismatch", "provider_mismatch", ""}, reasons(e.rows(id)))
	})

	t.Run("a later attempt: parked apart, then refused", func(t *testing.T) {
		id := e.newMessage(1, domain.StateSubmitted)
		// Attempt 2 has no provider yet: both are parked, neither shadows the other.
		require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, postB(rcpt(id, "delivered").attempt(2)))
		require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered").attempt(2)))
		e.step(id, 1, domain.StateRetried)
		e.step(id, 2, domain.StateQueued)
		e.step(id, 2, domain.StateRouted) // to sim-a
		e.step(id, 2, domain.StateSubmitted)
		require.NoError(t, e.intake.ApplyParked(e.ctx, []string{id}))
		require.Equal(t, domain.StateDelivered, e.state(id), "sim-a's genuine receipt applies")
		delivered := e.eventsOf(id, "MessageDelivered")
		require.Len(t, delivered, 1)
		require.Equal(t, []row{
			{Part: 1, Status: "delivered", Disposition: "ignored", Reason: "provider_mismatch", Resolved: true},
			{Part: 1, Status: "delivered", Disposition: "applied", Event: delivered[0].ID.String(), Resolved: true},
		}, e.rows(id))
	})

	t.Run("routed: the other provider first, the genuine one parked behind it", func(t *testing.T) {
		// The reported case: sim-b's receipt arrives while the message is
		// queued (provider unknown, so it is parked), then sim-a's.
		id := e.newMessage(1, domain.StateQueued)
		require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, postB(rcpt(id, "delivered")))
		require.Equal(t, receipts.Summary{Received: 1, Parked: 1}, e.mustPost(rcpt(id, "delivered")), "not a duplicate of sim-b's")
		e.step(id, 1, domain.StateRouted)
		e.step(id, 1, domain.StateSubmitted)
		require.NoError(t, e.intake.ApplyParked(e.ctx, []string{id}))
		require.Equal(t, domain.StateDelivered, e.state(id))
		require.Equal(t, []string{"provider_mismatch", ""}, reasons(e.rows(id)))
	})
}
