package orders

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// TestOneBadOrderDoesNotFailItsGroupCommit puts a poisoned order (a body
// with U+0000, which validation now refuses but which jsonb refuses at
// commit, SQLSTATE 22P05) into one group commit with good orders of the
// same account. The group commit fails; the good orders must still be
// accepted, each exactly once and charged once, and the poisoned one alone
// refused with ErrUnstorable (a client error, not a 500).
func TestOneBadOrderDoesNotFailItsGroupCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	acct, err := accounts.New(store, time.Now).Create(ctx, accounts.NewAccount{Name: "t",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	a := New(store, time.Now, Config{Logger: quietLogger()})
	defer a.Close()

	price := domain.Money{AmountMicros: 75_000, Currency: "EUR"}
	request := func(body, key string) Request {
		return Request{
			Principal: accounts.Principal{AccountID: acct.AccountID, KeyID: acct.KeyID, Scopes: acct.Scopes},
			Plan: &accept.Plan{Messages: []accept.Planned{{To: "+4915112345678", Region: "DE", Body: body,
				Segments: 1, Price: price}}, Total: price, ValiditySeconds: 3600},
			IdempotencyKey: key, RequestHash: RequestHash([]byte(body)),
			Render: func(acc *Accepted) ([]byte, error) { return []byte(`{"order_id":"` + acc.OrderID + `"}`), nil },
		}
	}

	// Hold the account so the lane's first commit waits and the others
	// queue into one group behind it.
	lock, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, `SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE`, domain.AccountStream(acct.AccountID))
	require.NoError(t, err)
	var wg sync.WaitGroup
	first := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := a.Accept(ctx, request("first", ""))
		first <- err
	}()
	queued := func(n int) func() bool {
		return func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			l := a.lanes[acct.AccountID]
			return l != nil && len(l.queue) == n
		}
	}
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return queued(0)(), "the first order is being committed" })

	const good, poisoned = 6, 3 // the poisoned one sits in the middle of the group
	results := make([]Result, good+1)
	errs := make([]error, good+1)
	for i := range good + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, key := "good", ""
			if i%2 == 0 {
				key = "key-" + string(rune('a'+i))
			}
			if i == poisoned {
				body = "bad\x00"
			}
			results[i], errs[i] = a.Accept(ctx, request(body, key))
		}()
		// One at a time, so the poisoned order is neither first nor last.
		storetest.Poll(t, 5*time.Second, func() (bool, string) { return queued(i + 1)(), fmt.Sprintf("racer %d waits in the lane", i) })
	}
	require.NoError(t, lock.Rollback(ctx))
	wg.Wait()
	require.NoError(t, <-first)

	accepted := map[string]bool{}
	for i := range good + 1 {
		if i == poisoned {
			require.ErrorIs(t, errs[i], ErrUnstorable, "the culprit gets its own error")
			continue
		}
		require.NoError(t, errs[i], "order %d shared a commit with the culprit", i)
		require.Equal(t, 202, results[i].Status)
		accepted[results[i].Accepted.OrderID] = true
	}
	require.Len(t, accepted, good)

	var orders, messages, keys int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE type = 'OrderAccepted'),
		count(*) FILTER (WHERE type = 'MessageAccepted') FROM events`).Scan(&orders, &messages))
	require.Equal(t, 1+good, orders, "every good order once, the culprit not at all")
	require.Equal(t, 1+good, messages)
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&keys))
	require.Equal(t, 4, keys, "the good orders' keys (orders 0, 2, 4, 6) are stored once")
	acc, err := accounts.Load(ctx, db.Pool, acct.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000_000-(1+good)*75_000), acc.Balance, "charged once per good order, nothing for the culprit")
	require.Equal(t, int64((1+good)*75_000), acc.Reserved)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
