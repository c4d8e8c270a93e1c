package orders

import (
	"context"
	"fmt"
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

// acceptRig is an acceptor over a real database and one account.
type acceptRig struct {
	db   *storetest.DB
	acct accounts.Created
	acc  *Acceptor
}

// newAcceptor is the one place these tests build an Acceptor, so that a
// change of the constructor's shape is a one-line change here.
func newAcceptor(t *testing.T, store *eventstore.Store, cfg Config) *Acceptor {
	t.Helper()
	a := New(store, time.Now, cfg)
	t.Cleanup(a.Close)
	return a
}

func newAcceptRig(t *testing.T, credit int64, cfg Config) *acceptRig {
	t.Helper()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	acct, err := accounts.New(store, time.Now).Create(context.Background(), accounts.NewAccount{Name: "t",
		Credit: domain.Money{AmountMicros: credit, Currency: "EUR"}})
	require.NoError(t, err)
	return &acceptRig{db: db, acct: acct, acc: newAcceptor(t, store, cfg)}
}

// order is a request for n messages of 75,000 micros each.
func (r *acceptRig) order(n int, key string, body string) Request {
	price := domain.Money{AmountMicros: 75_000, Currency: "EUR"}
	plan := &accept.Plan{Total: domain.Money{AmountMicros: int64(n) * price.AmountMicros, Currency: "EUR"}, ValiditySeconds: 3600}
	for range n {
		plan.Messages = append(plan.Messages, accept.Planned{To: "+4915112345678", Region: "DE", Body: "x", Segments: 1, Price: price})
	}
	return Request{
		Principal:      accounts.Principal{AccountID: r.acct.AccountID, KeyID: r.acct.KeyID, Scopes: r.acct.Scopes},
		Plan:           plan,
		IdempotencyKey: key, RequestHash: RequestHash([]byte(body)),
		Render: func(acc *Accepted) ([]byte, error) { return []byte(`{"order_id":"` + acc.OrderID + `"}`), nil },
	}
}

// written is what the store and the key table hold: event counts by type
// and the number of idempotency keys.
func (r *acceptRig) written(t *testing.T) map[string]int {
	t.Helper()
	ctx := context.Background()
	rows, err := r.db.Pool.Query(ctx, `SELECT type, count(*) FROM events GROUP BY type`)
	require.NoError(t, err)
	out := map[string]int{}
	for rows.Next() {
		var typ string
		var n int
		require.NoError(t, rows.Scan(&typ, &n))
		out[typ] = n
	}
	require.NoError(t, rows.Err())
	var keys int
	require.NoError(t, r.db.Pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys`).Scan(&keys))
	out["idempotency keys"] = keys
	return out
}

func (r *acceptRig) balance(t *testing.T) (balance, reserved int64) {
	t.Helper()
	a, err := accounts.Load(context.Background(), r.db.Pool, r.acct.AccountID)
	require.NoError(t, err)
	return a.Balance, a.Reserved
}

// TestAcceptReservesAndReplays: an accepted order writes its order, its
// messages and the reservation together and lowers the balance by its
// price; the same key and body again is a replay of the first answer with
// nothing written; the same key with another body is a conflict with
// nothing written; an order the balance cannot pay is refused with nothing
// written, its key not taken.
func TestAcceptReservesAndReplays(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newAcceptRig(t, 200_000, Config{})
	before := r.written(t)

	res, err := r.acc.Accept(ctx, r.order(2, "k1", "two"))
	require.NoError(t, err)
	require.Equal(t, 202, res.Status)
	require.False(t, res.Replayed)
	require.Len(t, res.Accepted.Messages, 2)
	require.Equal(t, domain.Money{AmountMicros: 150_000, Currency: "EUR"}, res.Accepted.Price)
	require.Equal(t, `{"order_id":"`+res.OrderID+`"}`, string(res.Body))
	after := r.written(t)
	require.Equal(t, before["OrderAccepted"]+1, after["OrderAccepted"])
	require.Equal(t, before["MessageAccepted"]+2, after["MessageAccepted"])
	require.Equal(t, before["BalanceReserved"]+1, after["BalanceReserved"])
	require.Equal(t, 1, after["idempotency keys"])
	balance, reserved := r.balance(t)
	require.Equal(t, int64(50_000), balance)
	require.Equal(t, int64(150_000), reserved)

	replay, err := r.acc.Accept(ctx, r.order(2, "k1", "two"))
	require.NoError(t, err)
	require.True(t, replay.Replayed)
	require.Equal(t, res.OrderID, replay.OrderID)
	require.Equal(t, 202, replay.Status)
	require.Equal(t, res.Body, replay.Body)
	require.Equal(t, after, r.written(t), "a replay writes nothing")

	_, err = r.acc.Accept(ctx, r.order(1, "k1", "one"))
	require.ErrorIs(t, err, ErrIdempotencyConflict)
	require.Equal(t, after, r.written(t), "a conflict writes nothing")

	_, err = r.acc.Accept(ctx, r.order(1, "k2", "one"))
	var short *domain.InsufficientBalanceError
	require.ErrorAs(t, err, &short)
	require.Equal(t, int64(75_000), short.Required.AmountMicros)
	require.Equal(t, int64(50_000), short.Available.AmountMicros)
	require.Equal(t, after, r.written(t), "a refused order writes nothing, not even its key")
	balance, reserved = r.balance(t)
	require.Equal(t, int64(50_000), balance)
	require.Equal(t, int64(150_000), reserved)
	require.NoError(t, eventstore.VerifyOK(ctx, r.db.Pool))
}

// TestLargeOrderIsCommittedAlone: an order with more messages than a group
// commit holds is committed on its own transaction, whole; the small
// orders queued around it are committed in others.
func TestLargeOrderIsCommittedAlone(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newAcceptRig(t, 10_000_000, Config{BatchMessages: 3})
	// Hold the account so the lane's first commit waits and the rest queue.
	lock, err := r.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = lock.Rollback(ctx) }()
	_, err = lock.Exec(ctx, `SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE`, domain.AccountStream(r.acct.AccountID))
	require.NoError(t, err)
	queued := func(n int) (bool, string) {
		r.acc.mu.Lock()
		defer r.acc.mu.Unlock()
		l := r.acc.lanes[r.acct.AccountID]
		got := 0
		if l != nil {
			got = len(l.queue)
		}
		return l != nil && got == n, fmt.Sprintf("%d orders queued in the lane, want %d", got, n)
	}

	sizes := []int{1, 5, 1, 1}
	results := make([]Result, len(sizes))
	errs := make([]error, len(sizes))
	var wg sync.WaitGroup
	for i, n := range sizes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = r.acc.Accept(ctx, r.order(n, "", ""))
		}()
		// One at a time, so the lane's queue has them in this order.
		storetest.Poll(t, 5*time.Second, func() (bool, string) { return queued(i) })
	}
	require.NoError(t, lock.Rollback(ctx))
	wg.Wait()

	// The transaction each order's events were written in.
	commitOf := func(res Result) []uint64 {
		streams := []string{domain.OrderStream(res.OrderID)}
		for _, m := range res.Accepted.Messages {
			streams = append(streams, domain.MessageStream(m.ID))
		}
		rows, err := r.db.Pool.Query(ctx, `SELECT DISTINCT xid::text::bigint FROM events WHERE stream_id = ANY($1)`, streams)
		require.NoError(t, err)
		var xids []uint64
		for rows.Next() {
			var x uint64
			require.NoError(t, rows.Scan(&x))
			xids = append(xids, x)
		}
		require.NoError(t, rows.Err())
		return xids
	}
	commits := make([]uint64, len(sizes))
	for i, res := range results {
		require.NoError(t, errs[i], "order %d", i)
		require.Len(t, res.Accepted.Messages, sizes[i])
		xids := commitOf(res)
		require.Len(t, xids, 1, "order %d is written in one transaction", i)
		commits[i] = xids[0]
	}
	require.NotEqual(t, commits[0], commits[1], "the large order waits for no group")
	require.NotEqual(t, commits[1], commits[2], "nor does anything join it")
	require.Equal(t, commits[2], commits[3], "the small ones behind it share a commit")
	balance, _ := r.balance(t)
	require.Equal(t, int64(10_000_000-8*75_000), balance)
	require.NoError(t, eventstore.VerifyOK(ctx, r.db.Pool))
}
