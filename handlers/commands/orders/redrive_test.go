package orders

import (
	"context"
	"errors"
	"fmt"
	"slices"
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

// redriveFixture is one account with orders whose messages the test
// drives into the states it needs, through the domain's own commands.
type redriveFixture struct {
	t        *testing.T
	ctx      context.Context
	db       *storetest.DB
	store    *eventstore.Store
	accounts *accounts.Service
	acceptor *Acceptor
	redriver *Redriver
	acct     accounts.Created
}

func newRedriveFixture(t *testing.T, credit int64) *redriveFixture {
	t.Helper()
	ctx := context.Background()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	svc := accounts.New(store, time.Now)
	acct, err := svc.Create(ctx, accounts.NewAccount{Name: "t", Credit: domain.Money{AmountMicros: credit, Currency: "EUR"}})
	require.NoError(t, err)
	a := New(store, time.Now, Config{})
	t.Cleanup(a.Close)
	return &redriveFixture{t: t, ctx: ctx, db: db, store: store, accounts: svc, acceptor: a,
		redriver: NewRedriver(store, a, accept.DefaultPolicy()), acct: acct}
}

func (f *redriveFixture) principal() accounts.Principal {
	return accounts.Principal{AccountID: f.acct.AccountID, KeyID: f.acct.KeyID, Scopes: f.acct.Scopes}
}

func (f *redriveFixture) request(reason string) RedriveRequest {
	f.t.Helper()
	view, err := f.accounts.Policy(f.ctx, f.acct.AccountID)
	require.NoError(f.t, err)
	return RedriveRequest{Principal: f.principal(), Account: view, Reason: reason, RequestID: "req-test"}
}

// order accepts an order of n messages through the Acceptor.
func (f *redriveFixture) order(n int) *Accepted {
	f.t.Helper()
	view, err := f.accounts.Policy(f.ctx, f.acct.AccountID)
	require.NoError(f.t, err)
	p := accept.NewPlanner(accept.DefaultPolicy(), &view)
	for i := range n {
		require.NoError(f.t, p.Add(i, accept.Input{To: fmt.Sprintf("+49151123%05d", i), Body: "hello", From: "afterok"}))
	}
	plan, err := p.Finish()
	require.NoError(f.t, err)
	res, err := f.acceptor.Accept(f.ctx, Request{Principal: f.principal(), Plan: plan})
	require.NoError(f.t, err)
	return res.Accepted
}

// step moves a message on by the domain's commands: "failed:<code>",
// "delivered" or "queued".
func (f *redriveFixture) step(messageID, to string) {
	f.t.Helper()
	stream := domain.MessageStream(messageID)
	move := func(ev domain.Event) {
		recs, err := f.store.ReadStream(f.ctx, stream, 1)
		require.NoError(f.t, err)
		m, err := eventstore.LoadMessage(recs)
		require.NoError(f.t, err)
		require.NoError(f.t, m.Apply(ev), "the step is legal")
		_, err = f.store.Append(f.ctx, stream, eventstore.Exact(len(recs)), eventstore.MustEvent(ev, eventstore.FollowUp(recs, "test")))
		require.NoError(f.t, err)
	}
	now := time.Now().UTC()
	move(domain.MessageQueued{Attempt: 1, At: now})
	switch {
	case to == "queued":
	case to == "delivered":
		route := domain.RouteDecision{RouteID: "r", Provider: "sim-a", Reason: "test"}
		move(domain.MessageRouted{Attempt: 1, Route: route, At: now})
		move(domain.MessageSubmitted{Attempt: 1, Provider: "sim-a", ProviderMessageID: "p-" + messageID, At: now})
		move(domain.MessageDelivered{Attempt: 1, Provider: "sim-a", At: now})
	case len(to) > 7 && to[:7] == "failed:":
		move(domain.MessageFailed{Attempt: 1, Failure: domain.Failure{Code: to[7:], Stage: domain.StageSubmit, Permanent: true}, At: now})
	default:
		f.t.Fatalf("unknown step %q", to)
	}
}

func (f *redriveFixture) message(id string) domain.Message {
	f.t.Helper()
	recs, err := f.store.ReadStream(f.ctx, domain.MessageStream(id), 1)
	require.NoError(f.t, err)
	m, err := eventstore.LoadMessage(recs)
	require.NoError(f.t, err)
	return m
}

// count counts the account's events of a type.
func (f *redriveFixture) count(typ string) int {
	f.t.Helper()
	var n int
	require.NoError(f.t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FROM events WHERE account_id = $1 AND type = $2`,
		f.acct.AccountID, typ).Scan(&n))
	return n
}

func (f *redriveFixture) balance() domain.Account {
	f.t.Helper()
	a, err := accounts.Load(f.ctx, f.db.Pool, f.acct.AccountID)
	require.NoError(f.t, err)
	return a
}

func TestRedriveMessage(t *testing.T) {
	t.Parallel()
	f := newRedriveFixture(t, 10_000_000)
	o := f.order(3)
	failed, delivered, queued := o.Messages[0].ID, o.Messages[1].ID, o.Messages[2].ID
	f.step(failed, "failed:undeliverable")
	f.step(delivered, "delivered")
	f.step(queued, "queued")
	before := f.balance()

	// A dry run answers the count and writes nothing.
	var last int64
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT max(global_position) FROM events`).Scan(&last))
	dry := f.request("provider fixed")
	dry.DryRun = true
	res, err := f.redriver.Message(f.ctx, dry, failed)
	require.NoError(t, err)
	require.Equal(t, 1, res.Redrivable)
	require.Empty(t, res.Orders)
	var now int64
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT max(global_position) FROM events`).Scan(&now))
	require.Equal(t, last, now, "a dry run wrote events")

	res, err = f.redriver.Message(f.ctx, f.request("provider fixed"), failed)
	require.NoError(t, err)
	require.Len(t, res.Orders, 1)
	acc := res.Orders[0]
	require.Len(t, acc.Messages, 1)
	copyID := acc.Messages[0].ID

	orig := f.message(failed)
	require.Equal(t, domain.StateFailed, orig.State, "the original stays failed")
	require.NotNil(t, orig.Redriven)
	require.Equal(t, domain.MessageRedriven{RedrivenAs: copyID, OrderID: acc.OrderID, Actor: f.acct.KeyID, Reason: "provider fixed",
		At: orig.Redriven.At}, *orig.Redriven)
	cp := f.message(copyID)
	require.Equal(t, failed, cp.RedriveOf)
	require.Equal(t, domain.StateAccepted, cp.State)
	require.Equal(t, orig.To, cp.To)
	require.Equal(t, orig.Body, cp.Body)
	require.Equal(t, orig.From, cp.From)
	require.Equal(t, acc.OrderID, cp.OrderID)

	// Priced and reserved anew: the balance went down by the copy's price.
	after := f.balance()
	require.Equal(t, before.Balance-acc.Price.AmountMicros, after.Balance)
	require.Equal(t, before.Reserved+acc.Price.AmountMicros, after.Reserved)
	require.Positive(t, acc.Price.AmountMicros)

	// The event carries who asked and the request in its metadata.
	recs, err := f.store.ReadStream(f.ctx, domain.MessageStream(failed), 1)
	require.NoError(t, err)
	lastRec := recs[len(recs)-1]
	require.Equal(t, "MessageRedriven", lastRec.Type)
	require.Equal(t, f.acct.KeyID, lastRec.Metadata.Actor)
	require.Equal(t, "req-test", lastRec.Metadata.CausationID)

	// Once only.
	_, err = f.redriver.Message(f.ctx, f.request("again"), failed)
	require.ErrorIs(t, err, ErrAlreadyRedriven)
	// Not failed: not redrivable. The copy itself (accepted) neither.
	for _, id := range []string{delivered, queued, copyID} {
		_, err = f.redriver.Message(f.ctx, f.request("why not"), id)
		require.ErrorIs(t, err, ErrNotRedrivable, id)
	}
	// A reason is required.
	_, err = f.redriver.Message(f.ctx, f.request(""), failed)
	require.ErrorIs(t, err, domain.ErrInvalidReason)
	// Unknown, and another account's: not found, alike.
	_, err = f.redriver.Message(f.ctx, f.request("x"), "01JAAAAAAAAAAAAAAAAAAAAAAA")
	require.ErrorIs(t, err, ErrRedriveNotFound)
	other, err := f.accounts.Create(f.ctx, accounts.NewAccount{Name: "other", Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	stranger := f.request("x")
	stranger.Principal = accounts.Principal{AccountID: other.AccountID, KeyID: other.KeyID, Scopes: other.Scopes}
	f2 := f.order(1)
	f.step(f2.Messages[0].ID, "failed:undeliverable")
	_, err = f.redriver.Message(f.ctx, stranger, f2.Messages[0].ID)
	require.ErrorIs(t, err, ErrRedriveNotFound)
	_, err = f.redriver.Order(f.ctx, stranger, f2.OrderID)
	require.ErrorIs(t, err, ErrRedriveNotFound)
	require.True(t, f.message(f2.Messages[0].ID).Redrivable(), "another account's re-drive changed nothing")

	// A failure code filter that does not match refuses.
	coded := f.request("x")
	coded.FailureCodes = []string{"expired"}
	_, err = f.redriver.Message(f.ctx, coded, f2.Messages[0].ID)
	require.ErrorIs(t, err, ErrNotRedrivable)
}

func TestRedriveOrderInBatchesWithAFilter(t *testing.T) {
	t.Parallel()
	f := newRedriveFixture(t, 10_000_000)
	f.redriver.Batch = 3
	o := f.order(12)
	want := map[string]bool{}
	for i, m := range o.Messages {
		switch i % 4 {
		case 0, 1:
			f.step(m.ID, "failed:undeliverable")
			want[m.ID] = true
		case 2:
			f.step(m.ID, "failed:invalid_destination")
		case 3:
			f.step(m.ID, "delivered")
		}
	}
	req := f.request("carrier outage over")
	req.FailureCodes = []string{"undeliverable"}
	dry := req
	dry.DryRun = true
	res, err := f.redriver.Order(f.ctx, dry, o.OrderID)
	require.NoError(t, err)
	require.Equal(t, 6, res.Redrivable)
	require.Empty(t, res.Orders)
	require.Equal(t, 0, f.count("MessageRedriven"))

	before := f.balance()
	res, err = f.redriver.Order(f.ctx, req, o.OrderID)
	require.NoError(t, err)
	require.Equal(t, 6, res.Redrivable)
	require.Equal(t, 6, res.NotRedrivable, "3 of the other code, 3 delivered")
	require.Len(t, res.Orders, 2, "6 copies in batches of 3")
	var price int64
	got := map[string]bool{}
	for _, acc := range res.Orders {
		require.Len(t, acc.Messages, 3)
		price += acc.Price.AmountMicros
		for _, m := range acc.Messages {
			cp := f.message(m.ID)
			require.True(t, want[cp.RedriveOf], "copy of %s, which was not to be re-driven", cp.RedriveOf)
			require.False(t, got[cp.RedriveOf], "%s re-driven twice", cp.RedriveOf)
			got[cp.RedriveOf] = true
			require.Equal(t, m.ID, f.message(cp.RedriveOf).Redriven.RedrivenAs)
		}
	}
	require.Len(t, got, 6)
	require.Equal(t, before.Balance-price, f.balance().Balance)

	// Again: nothing left of that code.
	_, err = f.redriver.Order(f.ctx, req, o.OrderID)
	require.ErrorIs(t, err, ErrNotRedrivable)
	// Without the filter the other code's three go.
	res, err = f.redriver.Order(f.ctx, f.request("those too"), o.OrderID)
	require.NoError(t, err)
	require.Equal(t, 3, res.Redrivable)
	require.Equal(t, 6, res.AlreadyRedriven)
	require.Len(t, res.Orders, 1)
}

func TestRedriveShortOfBalanceWritesNothing(t *testing.T) {
	t.Parallel()
	price, err := accept.DefaultPolicy().Prices.Price("DE", 1)
	require.NoError(t, err)
	// Enough for the order of four and one copy more, not for four copies.
	f := newRedriveFixture(t, 5*price.AmountMicros)
	o := f.order(4)
	for _, m := range o.Messages {
		f.step(m.ID, "failed:undeliverable")
	}
	before := f.count("OrderAccepted")
	_, err = f.redriver.Order(f.ctx, f.request("try"), o.OrderID)
	var ib *domain.InsufficientBalanceError
	require.ErrorAs(t, err, &ib)
	require.Equal(t, 4*price.AmountMicros, ib.Required.AmountMicros)
	require.Equal(t, before, f.count("OrderAccepted"), "an order was written")
	require.Equal(t, 0, f.count("MessageRedriven"))

	// One copy fits; the second does not, and leaves nothing behind.
	_, err = f.redriver.Message(f.ctx, f.request("try"), o.Messages[0].ID)
	require.NoError(t, err)
	_, err = f.redriver.Message(f.ctx, f.request("try"), o.Messages[1].ID)
	require.ErrorAs(t, err, &ib)
	require.Equal(t, 1, f.count("MessageRedriven"))
	require.Equal(t, before+1, f.count("OrderAccepted"))
	require.True(t, f.message(o.Messages[1].ID).Redrivable())
}

// TestRedriveRacesEndWithOneCopy sends many re-drives of one message at
// once, and many re-drives of one order: every failed message ends with
// exactly one copy, and the losers leave no order, message or
// reservation behind.
func TestRedriveRacesEndWithOneCopy(t *testing.T) {
	t.Parallel()
	f := newRedriveFixture(t, 100_000_000)
	f.redriver.Batch = 4
	single := f.order(1)
	f.step(single.Messages[0].ID, "failed:undeliverable")
	bulk := f.order(10)
	for _, m := range bulk.Messages {
		f.step(m.ID, "failed:undeliverable")
	}
	ordersBefore, reservedBefore := f.count("OrderAccepted"), f.count("BalanceReserved")
	balanceBefore := f.balance()

	const racers = 16
	var wg sync.WaitGroup
	msgErrs := make([]error, racers)
	orderRes := make([]RedriveResult, racers)
	orderErrs := make([]error, racers)
	start := make(chan struct{})
	for i := range racers {
		wg.Add(2)
		go func() {
			defer wg.Done()
			<-start
			_, msgErrs[i] = f.redriver.Message(f.ctx, f.request(fmt.Sprintf("racer %d", i)), single.Messages[0].ID)
		}()
		go func() {
			defer wg.Done()
			<-start
			orderRes[i], orderErrs[i] = f.redriver.Order(f.ctx, f.request(fmt.Sprintf("racer %d", i)), bulk.OrderID)
		}()
	}
	close(start)
	wg.Wait()

	won := 0
	for _, err := range msgErrs {
		switch {
		case err == nil:
			won++
		case errors.Is(err, ErrAlreadyRedriven):
		default:
			t.Fatalf("a racing re-drive failed otherwise: %v", err)
		}
	}
	require.Equal(t, 1, won, "one message, one copy")
	copies, newOrders := 0, 1
	for i, err := range orderErrs {
		if errors.Is(err, ErrNotRedrivable) {
			continue // everything was taken before it looked
		}
		require.NoError(t, err)
		copies += orderRes[i].Redrivable
		newOrders += len(orderRes[i].Orders)
	}
	require.Equal(t, 10, copies, "ten failed messages, ten copies over all the racing order re-drives")

	// The store agrees: one MessageRedriven per original, one copy per
	// original, and an order and a reservation for each winner only.
	require.Equal(t, 11, f.count("MessageRedriven"))
	var distinct, total int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(DISTINCT data->>'redrive_of'), count(*) FROM events
WHERE account_id = $1 AND type = 'MessageAccepted' AND data ? 'redrive_of'`, f.acct.AccountID).Scan(&distinct, &total))
	require.Equal(t, 11, distinct)
	require.Equal(t, 11, total, "a loser's copy was stored")
	require.Equal(t, ordersBefore+newOrders, f.count("OrderAccepted"))
	require.Equal(t, reservedBefore+newOrders, f.count("BalanceReserved"))
	price := single.Messages[0].Price.AmountMicros
	require.Equal(t, balanceBefore.Balance-11*price, f.balance().Balance, "every copy reserved once, no loser's reservation")
	for _, m := range append(bulk.Messages, single.Messages...) {
		orig := f.message(m.ID)
		require.NotNil(t, orig.Redriven)
		require.Equal(t, m.ID, f.message(orig.Redriven.RedrivenAs).RedriveOf)
	}
}

// TestOrderRedriveIsBatched re-drives an order of 5,000 failed messages:
// every one is re-driven once, in new orders of at most Batch copies,
// each committed in its own transaction with its MessageRedriven events.
// It logs how long the whole re-drive took.
func TestOrderRedriveIsBatched(t *testing.T) {
	t.Parallel()
	f := newRedriveFixture(t, 1_000_000_000)
	const n = 5000
	o := f.order(n)
	// Fail them all, a thousand per transaction, as the expirer would.
	now := time.Now().UTC()
	for part := range slices.Chunk(o.Messages, 1000) {
		require.NoError(t, f.store.InTx(f.ctx, func(tx *eventstore.Tx) error {
			appends := make([]eventstore.StreamAppend, len(part))
			for i, m := range part {
				ev := domain.MessageFailed{Attempt: 0, Failure: domain.Failure{Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true}, At: now}
				appends[i] = eventstore.StreamAppend{Stream: domain.MessageStream(m.ID), Expected: eventstore.Exact(1),
					Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.Metadata{AccountID: f.acct.AccountID, CorrelationID: o.OrderID, Actor: "test"})}}
			}
			_, err := tx.Append(f.ctx, appends...)
			return err
		}))
	}
	start := time.Now()
	res, err := f.redriver.Order(f.ctx, f.request("expired in an outage"), o.OrderID)
	took := time.Since(start)
	require.NoError(t, err)
	require.Equal(t, n, res.Redrivable)
	require.Len(t, res.Orders, n/500)
	t.Logf("re-drove %d messages as %d orders in %s (%.0f messages/s)", n, len(res.Orders), took.Round(time.Millisecond), n/took.Seconds())

	var redriven, txs, copies, copyTxs int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*), count(DISTINCT xid) FROM events WHERE type = 'MessageRedriven'
		AND account_id = $1`, f.acct.AccountID).Scan(&redriven, &txs))
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*), count(DISTINCT xid) FROM events WHERE type = 'MessageAccepted'
		AND account_id = $1 AND data ? 'redrive_of'`, f.acct.AccountID).Scan(&copies, &copyTxs))
	require.Equal(t, n, redriven)
	require.Equal(t, n, copies)
	require.Equal(t, n/500, txs, "one transaction per batch of 500")
	require.Equal(t, txs, copyTxs, "each batch's copies and MessageRedriven share their transaction")
	var mixed int
	require.NoError(t, f.db.Pool.QueryRow(f.ctx, `SELECT count(*) FROM (SELECT xid FROM events
		WHERE account_id = $1 AND (type = 'MessageRedriven' OR (type = 'MessageAccepted' AND data ? 'redrive_of'))
		GROUP BY xid HAVING count(*) FILTER (WHERE type = 'MessageRedriven') <> count(*) FILTER (WHERE type = 'MessageAccepted')) x`,
		f.acct.AccountID).Scan(&mixed))
	require.Zero(t, mixed, "a transaction whose copies and re-drive events do not pair up")
}
