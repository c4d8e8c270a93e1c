package api_test

import (
	"context"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// creditEvents counts an account's BalanceCredited events, the opening
// credit (AccountCredited) apart.
func (e *env) creditEvents(accountID string) int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE stream_id = $1 AND type = 'BalanceCredited'`, domain.AccountStream(accountID)).Scan(&n))
	return n
}

// TestCreditIdempotencyKey: a retried credit answers the first answer and
// moves no money; the same key for another credit is 409 and writes
// nothing; a credit without the header works as before.
func TestCreditIdempotencyKey(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	adm := e.account(1_000_000, accounts.ScopeAdmin)
	c := e.account(1_000_000)
	other := e.account(1_000_000)
	path := "/v1/accounts/" + c.AccountID + "/credits"
	body := `{"amount_micros": 5000000, "reason": "invoice 117 paid"}`

	first := e.do("POST", path, adm.APIKey, body, "Idempotency-Key", "pay-117")
	require.Equal(t, 201, first.status, "%s", first.raw)
	require.Empty(t, first.header.Get("Idempotent-Replayed"))
	require.Equal(t, map[string]any{"amount_micros": 6_000_000.0, "currency": "EUR"}, first.body["balance"])
	require.Equal(t, int64(6_000_000), e.balance(c.AccountID).Balance)
	last := e.lastEvent(c.AccountID)
	require.Equal(t, "BalanceCredited", last.Type)
	require.Equal(t, adm.KeyID, last.Metadata.Actor)
	events := e.eventCount()

	// The timed-out operator retries, the body spelled otherwise.
	again := e.do("POST", path, adm.APIKey, `{"reason":"invoice 117 paid","amount_micros":5000000}`, "Idempotency-Key", "pay-117")
	require.Equal(t, 201, again.status, "%s", again.raw)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, "application/json", again.header.Get("Content-Type"))
	require.Equal(t, string(first.raw), string(again.raw), "the original response, byte for byte")
	require.Equal(t, events, e.eventCount(), "a replay wrote an event")
	require.Equal(t, int64(6_000_000), e.balance(c.AccountID).Balance, "credited once")

	// The same key for another credit: 409, nothing written.
	for _, r := range []reply{
		e.do("POST", path, adm.APIKey, `{"amount_micros": 5000001, "reason": "invoice 117 paid"}`, "Idempotency-Key", "pay-117"),
		e.do("POST", path, adm.APIKey, `{"amount_micros": 5000000, "reason": "invoice 118 paid"}`, "Idempotency-Key", "pay-117"),
		e.do("POST", "/v1/accounts/"+other.AccountID+"/credits", adm.APIKey, body, "Idempotency-Key", "pay-117"),
	} {
		requireProblem(t, r, 409, "idempotency_conflict")
	}
	require.Equal(t, events, e.eventCount(), "a conflict wrote an event")
	require.Equal(t, int64(1_000_000), e.balance(other.AccountID).Balance)

	// Keys are the caller's: another admin's same key is its own.
	adm2 := e.account(1_000_000, accounts.ScopeAdmin)
	r := e.do("POST", path, adm2.APIKey, body, "Idempotency-Key", "pay-117")
	require.Equal(t, 201, r.status, "%s", r.raw)
	require.Empty(t, r.header.Get("Idempotent-Replayed"))
	require.Equal(t, int64(11_000_000), e.balance(c.AccountID).Balance)

	// An order of the admin's account with the same key is not a credit's.
	o := e.do("POST", "/v1/orders", adm.APIKey, order(sim.ExampleDelivered), "Idempotency-Key", "pay-117")
	require.Equal(t, 202, o.status, "%s", o.raw)
	require.Empty(t, o.header.Get("Idempotent-Replayed"))
	again = e.do("POST", path, adm.APIKey, body, "Idempotency-Key", "pay-117")
	require.Equal(t, string(first.raw), string(again.raw), "the order's key left the credit's alone")

	// The header's rules are those of orders; refused, nothing written.
	events = e.eventCount()
	for _, hdr := range [][]string{{"Idempotency-Key", ""}, {"Idempotency-Key", "has space"}, {"Idempotency-Key", "é"}} {
		requireProblem(t, e.do("POST", path, adm.APIKey, body, hdr...), 400, "invalid_request")
	}
	// A refused credit records no key: the corrected request is fresh.
	requireProblem(t, e.do("POST", path, adm.APIKey, `{"amount_micros": 0, "reason": "x"}`, "Idempotency-Key", "fix-me"), 400, "invalid_request")
	require.Equal(t, events, e.eventCount())
	require.Equal(t, 201, e.do("POST", path, adm.APIKey, `{"amount_micros": 1, "reason": "x"}`, "Idempotency-Key", "fix-me").status)

	// Without the header, as before: every request credits.
	for range 2 {
		r := e.do("POST", path, adm.APIKey, `{"amount_micros": 1000000, "reason": "wire"}`)
		require.Equal(t, 201, r.status, "%s", r.raw)
		require.Empty(t, r.header.Get("Idempotent-Replayed"))
	}
	require.Equal(t, int64(13_000_001), e.balance(c.AccountID).Balance)
	require.Equal(t, 5, e.creditEvents(c.AccountID))
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

// TestCreditIdempotencyKeyRace: 20 identical credits at once with one key
// credit once, and every one answers the same; the account's stream
// verifies and folds to the balance credited once.
func TestCreditIdempotencyKeyRace(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	adm := e.account(1_000_000, accounts.ScopeAdmin)
	c := e.account(1_000_000)
	path := "/v1/accounts/" + c.AccountID + "/credits"
	const racers = 20
	replies := make([]reply, racers)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			replies[i] = e.do("POST", path, adm.APIKey, `{"amount_micros": 7000000, "reason": "wire 42"}`, "Idempotency-Key", "race")
		}()
	}
	close(start)
	wg.Wait()
	replayed := 0
	for i := range racers {
		require.Equal(t, 201, replies[i].status, "%s", replies[i].raw)
		require.Equal(t, string(replies[0].raw), string(replies[i].raw))
		if replies[i].header.Get("Idempotent-Replayed") == "true" {
			replayed++
		}
	}
	require.Equal(t, racers-1, replayed, "one request credits, the others replay it")
	require.Equal(t, 1, e.creditEvents(c.AccountID))
	require.Equal(t, map[string]any{"amount_micros": 8_000_000.0, "currency": "EUR"}, replies[0].body["balance"])

	// What `afterok verify` checks, and the stream folded from scratch.
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
	evs, err := e.store.ReadStream(context.Background(), domain.AccountStream(c.AccountID), 1)
	require.NoError(t, err)
	var folded domain.Account
	for _, re := range evs {
		ev, err := re.Decode()
		require.NoError(t, err)
		require.NoError(t, folded.Apply(ev))
	}
	require.Equal(t, int64(8_000_000), folded.Balance)
	require.Equal(t, int64(8_000_000), e.balance(c.AccountID).Balance)
}
