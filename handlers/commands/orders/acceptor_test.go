package orders

import (
	"context"
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

// TestRepeatedKeyInOneCommit puts several requests with the same
// Idempotency-Key into one group commit, deterministically: the account is
// locked while a first order holds the lane, so the racers queue behind it
// and are committed together. One statement cannot store a key twice; the
// answer must still be one order, one charge, and every racer told its id
// (or, for a different body, a conflict).
func TestRepeatedKeyInOneCommit(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	acct, err := accounts.New(store, time.Now).Create(ctx, accounts.NewAccount{Name: "t",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	a := New(store, time.Now, Config{})
	defer a.Close()

	price := domain.Money{AmountMicros: 75_000, Currency: "EUR"}
	request := func(key string, body byte) Request {
		return Request{
			Principal: accounts.Principal{AccountID: acct.AccountID, KeyID: acct.KeyID, Scopes: acct.Scopes},
			Plan: &accept.Plan{Messages: []accept.Planned{{To: "+4915112345678", Region: "DE", Body: "x",
				Segments: 1, Price: price}}, Total: price, ValiditySeconds: 3600},
			IdempotencyKey: key, RequestHash: RequestHash([]byte{body}),
			Render: func(acc *Accepted) ([]byte, error) { return []byte(`{"order_id":"` + acc.OrderID + `"}`), nil },
		}
	}

	// Hold the account so the lane's first commit waits.
	lock, err := db.Pool.Begin(ctx)
	require.NoError(t, err)
	_, err = lock.Exec(ctx, `SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE`, domain.AccountStream(acct.AccountID))
	require.NoError(t, err)

	var wg sync.WaitGroup
	first := make(chan error, 1)
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := a.Accept(ctx, request("", 0))
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

	const racers = 6
	results := make([]Result, racers+1)
	errs := make([]error, racers+1)
	for i := range racers + 1 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := byte(1)
			if i == racers {
				body = 2 // the same key with a different body
			}
			results[i], errs[i] = a.Accept(ctx, request("dup", body))
		}()
	}
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return queued(racers + 1)(), "every racer waits in the same lane" })
	require.NoError(t, lock.Rollback(ctx))
	wg.Wait()
	require.NoError(t, <-first)

	// Whichever body came first in the queue won the key; the other body
	// is a conflict, and every request with the winner's body is told its
	// order.
	bodyOf := func(i int) byte {
		if i == racers {
			return 2
		}
		return 1
	}
	winner := -1
	for i := range racers + 1 {
		if errs[i] == nil && results[i].Accepted != nil {
			require.Equal(t, -1, winner, "one request wins the key")
			winner = i
		}
	}
	require.NotEqual(t, -1, winner, "one request wins the key")
	want := `{"order_id":"` + results[winner].Accepted.OrderID + `"}`
	for i := range racers + 1 {
		if bodyOf(i) != bodyOf(winner) {
			require.ErrorIs(t, errs[i], ErrIdempotencyConflict, "racer %d", i)
			continue
		}
		require.NoError(t, errs[i], "racer %d", i)
		require.Equal(t, 202, results[i].Status)
		if i != winner {
			require.True(t, results[i].Replayed)
			require.Equal(t, want, string(results[i].Body))
		}
	}

	var orders int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM events WHERE type = 'OrderAccepted'`).Scan(&orders))
	require.Equal(t, 2, orders, "the first order and one order for the key")
	acc, err := accounts.Load(ctx, db.Pool, acct.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(10_000_000-2*75_000), acc.Balance, "charged once for the key")
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}
