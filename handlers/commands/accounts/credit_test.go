package accounts_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// credits returns the BalanceCredited events of an account after its
// opening.
func credits(t *testing.T, evs []eventstore.RecordedEvent) []domain.BalanceCredited {
	t.Helper()
	var out []domain.BalanceCredited
	for _, e := range evs {
		if e.Type != "BalanceCredited" {
			continue
		}
		ev, err := e.Decode()
		require.NoError(t, err)
		out = append(out, ev.(domain.BalanceCredited))
	}
	return out
}

func creditReq(account, key string, micros int64, reason string) accounts.CreditRequest {
	return accounts.CreditRequest{AccountID: account, AmountMicros: micros, IdempotencyKey: key, KeyScope: "01ADMINACCOUNT0000000000AA",
		Action: accounts.Action{Actor: "key_admin", Reason: reason, Cause: "req_1"}}
}

func TestCreditOnceReplaysAndRefusesConflicts(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	other := open(t, svc)

	first, err := svc.CreditOnce(ctx, creditReq(c.AccountID, "pay-117", 2_500_000, "invoice 117 paid"))
	require.NoError(t, err)
	require.False(t, first.Replayed)
	require.Equal(t, 201, first.Status)
	require.JSONEq(t, `{"account_id":"`+c.AccountID+`","credited":{"amount_micros":2500000,"currency":"EUR"},
		"reason":"invoice 117 paid","balance":{"amount_micros":3500000,"currency":"EUR"},"reserved":{"amount_micros":0,"currency":"EUR"}}`,
		string(first.Body))
	after := len(accountEvents(t, db, c.AccountID))

	again, err := svc.CreditOnce(ctx, creditReq(c.AccountID, "pay-117", 2_500_000, "invoice 117 paid"))
	require.NoError(t, err)
	require.True(t, again.Replayed)
	require.Equal(t, first.Status, again.Status)
	require.Equal(t, string(first.Body), string(again.Body), "a repeat answers the first answer, byte for byte")
	require.Equal(t, first.Credited, again.Credited)

	// The same key with anything else: a conflict, and nothing written.
	for name, req := range map[string]accounts.CreditRequest{
		"another amount":  creditReq(c.AccountID, "pay-117", 2_500_001, "invoice 117 paid"),
		"another reason":  creditReq(c.AccountID, "pay-117", 2_500_000, "invoice 118 paid"),
		"another account": creditReq(other.AccountID, "pay-117", 2_500_000, "invoice 117 paid"),
	} {
		_, err := svc.CreditOnce(ctx, req)
		require.ErrorIs(t, err, accounts.ErrIdempotencyConflict, name)
	}
	require.Len(t, accountEvents(t, db, c.AccountID), after, "a repeat or a conflict wrote an event")
	require.Len(t, accountEvents(t, db, other.AccountID), 3, "a conflict credited the other account")
	loaded, err := accounts.Load(ctx, db.Pool, c.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(3_500_000), loaded.Balance, "the money moved once")

	// Keys are the caller's: another scope's same key is its own.
	req := creditReq(c.AccountID, "pay-117", 1_000_000, "another admin's payment")
	req.KeyScope = accounts.OperatorKeyScope
	res, err := svc.CreditOnce(ctx, req)
	require.NoError(t, err)
	require.False(t, res.Replayed)
	require.Equal(t, int64(4_500_000), res.Credited.Balance.AmountMicros)

	// An order's record of the same key, in the same scope, is not a
	// credit's: neither answers for the other.
	_, err = db.Pool.Exec(ctx, `INSERT INTO idempotency_keys (account_id, key, request_hash, order_id, status, response, created_at, expires_at)
		VALUES ($1, 'order-key', '\x00', 'ORDER', 202, '{}', now(), now() + interval '1 day')`, "01ADMINACCOUNT0000000000AA")
	require.NoError(t, err)
	res, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "order-key", 1_000_000, "wire"))
	require.NoError(t, err)
	require.False(t, res.Replayed)
	var orderID string
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT order_id FROM idempotency_keys WHERE key = 'order-key'`).Scan(&orderID))
	require.Equal(t, "ORDER", orderID, "the order's record is untouched")

	// A key that the API's header rules refuse is refused here too.
	_, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "has space", 1, "x"))
	require.ErrorIs(t, err, accounts.ErrInvalid)

	// A refused credit records no key: the corrected retry is fresh.
	_, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "fix-me", 0, "wire"))
	require.ErrorIs(t, err, domain.ErrInvalidAmount)
	res, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "fix-me", 1, "wire"))
	require.NoError(t, err)
	require.False(t, res.Replayed)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// TestCreditOnceWithoutKey: no key, no record, and a repeat credits again
// (as before keys existed).
func TestCreditOnceWithoutKey(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	for i := 0; i < 2; i++ {
		res, err := svc.CreditOnce(ctx, creditReq(c.AccountID, "", 1_000_000, "wire"))
		require.NoError(t, err)
		require.False(t, res.Replayed)
		require.Nil(t, res.Body)
		require.Equal(t, int64(2_000_000+int64(i)*1_000_000), res.Credited.Balance.AmountMicros)
	}
	var n int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&n))
	require.Zero(t, n)
}

// TestCreditOnceKeyExpires: after the key's lifetime the same key is a new
// credit, as orders' keys are.
func TestCreditOnceKeyExpires(t *testing.T) {
	ctx := context.Background()
	_, db := newService(t)
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	clock := func() time.Time { return time.Unix(0, now.Load()) }
	svc := accounts.New(eventstore.New(db.Pool), clock, accounts.IdempotencyTTL(time.Hour))
	c := open(t, svc)
	_, err := svc.CreditOnce(ctx, creditReq(c.AccountID, "k", 1_000_000, "wire"))
	require.NoError(t, err)
	now.Add(int64(59 * time.Minute))
	res, err := svc.CreditOnce(ctx, creditReq(c.AccountID, "k", 1_000_000, "wire"))
	require.NoError(t, err)
	require.True(t, res.Replayed, "within the hour")
	now.Add(int64(2 * time.Minute))
	res, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "k", 5, "another"))
	require.NoError(t, err, "an expired key's record is no conflict")
	require.False(t, res.Replayed)
	require.Equal(t, int64(2_000_005), res.Credited.Balance.AmountMicros)
	res, err = svc.CreditOnce(ctx, creditReq(c.AccountID, "k", 5, "another"))
	require.NoError(t, err)
	require.True(t, res.Replayed, "the new record answers")
	require.Len(t, credits(t, accountEvents(t, db, c.AccountID)), 2)
}

// TestCreditOnceRace: 20 requests with one key at once, for one account,
// end with one credit and one answer; racing ones for two accounts with one
// key credit exactly one of them.
func TestCreditOnceRace(t *testing.T) {
	ctx := context.Background()
	svc, db := newService(t)
	c := open(t, svc)
	const n = 20
	results := make([]accounts.CreditResult, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			results[i], errs[i] = svc.CreditOnce(ctx, creditReq(c.AccountID, "race", 7_000_000, "wire 42"))
		}()
	}
	close(start)
	wg.Wait()
	fresh := 0
	for i := range n {
		require.NoError(t, errs[i])
		require.Equal(t, string(results[0].Body), string(results[i].Body))
		if !results[i].Replayed {
			fresh++
		}
	}
	require.Equal(t, 1, fresh, "one request credits, the others replay it")
	got := credits(t, accountEvents(t, db, c.AccountID))
	require.Len(t, got, 1)
	require.Equal(t, int64(8_000_000), got[0].Balances.BalanceAfter)
	loaded, err := accounts.Load(ctx, db.Pool, c.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(8_000_000), loaded.Balance)

	// One key, two accounts, at once: one of them is credited, the other
	// request is a conflict.
	a, b := open(t, svc), open(t, svc)
	for round := range 5 {
		key := "split-" + string(rune('a'+round))
		var conflicts atomic.Int32
		wg = sync.WaitGroup{}
		start := make(chan struct{})
		for i, id := range []string{a.AccountID, b.AccountID, a.AccountID, b.AccountID} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, err := svc.CreditOnce(ctx, creditReq(id, key, 1_000_000, "wire"))
				if err != nil {
					require.ErrorIs(t, err, accounts.ErrIdempotencyConflict, "request %d", i)
					conflicts.Add(1)
				}
			}()
		}
		close(start)
		wg.Wait()
		require.Equal(t, int32(2), conflicts.Load(), "the two requests for the losing account conflict")
	}
	total := len(credits(t, accountEvents(t, db, a.AccountID))) + len(credits(t, accountEvents(t, db, b.AccountID)))
	require.Equal(t, 5, total, "one credit per key")
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}
