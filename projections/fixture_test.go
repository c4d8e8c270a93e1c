package projections_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/projections"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture writes the events the pipeline would, through the domain's own
// commands, so the projections see realistic histories without the
// pipeline running.
type fixture struct {
	t     testing.TB
	ctx   context.Context
	db    *storetest.DB
	store *eventstore.Store

	mu  sync.Mutex
	now time.Time
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	db := storetest.NewDB(t)
	return &fixture{t: t, ctx: context.Background(), db: db, store: eventstore.New(db.Pool),
		now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
}

// tick advances the fixture's clock (event times) by 150 ms.
func (f *fixture) tick() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(150 * time.Millisecond)
	return f.now
}

func (f *fixture) md(account, order string) eventstore.Metadata {
	return eventstore.Metadata{AccountID: account, CorrelationID: order, Actor: "fixture"}
}

func (f *fixture) openAccount(credit int64) string {
	f.t.Helper()
	id := ulid.Make().String()
	at := f.tick()
	opened, err := domain.OpenAccount(id, "Acme "+id[20:], "EUR", nil, at)
	require.NoError(f.t, err)
	var a domain.Account
	require.NoError(f.t, a.Apply(opened))
	credited, err := a.Credit(domain.Money{AmountMicros: credit, Currency: "EUR"}, "opening", at)
	require.NoError(f.t, err)
	md := f.md(id, id)
	_, err = f.store.Append(f.ctx, domain.AccountStream(id), eventstore.NoStream,
		eventstore.MustEvent(opened, md), eventstore.MustEvent(credited, md))
	require.NoError(f.t, err)
	return id
}

func (f *fixture) account(id string) (domain.Account, int) {
	f.t.Helper()
	evs, err := f.store.ReadStream(f.ctx, domain.AccountStream(id), 1)
	require.NoError(f.t, err)
	var a domain.Account
	for _, e := range evs {
		ev, err := e.Decode()
		require.NoError(f.t, err)
		require.NoError(f.t, a.Apply(ev))
	}
	return a, len(evs)
}

const pricePerMessage = 75_000

// placeOrder accepts an order the way the acceptor does: order, account
// and message streams in one transaction.
func (f *fixture) placeOrder(account string, to ...string) (string, []string) {
	f.t.Helper()
	return f.placeScheduledOrder(account, time.Time{}, to...)
}

// placeScheduledOrder is placeOrder with a send_at (zero: at once); the
// validity of an hour counts from it.
func (f *fixture) placeScheduledOrder(account string, sendAt time.Time, to ...string) (string, []string) {
	f.t.Helper()
	at := f.tick()
	start := at
	if sendAt.After(at) {
		start = sendAt
	}
	orderID := ulid.Make().String()
	a, v := f.account(account)
	price := domain.Money{AmountMicros: pricePerMessage * int64(len(to)), Currency: "EUR"}
	reserved, err := a.Reserve(orderID, price, len(to), at)
	require.NoError(f.t, err)
	md := f.md(account, orderID)
	batch := []eventstore.StreamAppend{
		{Stream: domain.OrderStream(orderID), Expected: eventstore.NoStream, Events: []eventstore.EventData{
			eventstore.MustEvent(domain.OrderAccepted{OrderID: orderID, AccountID: account, MessageCount: len(to), Price: price,
				ValiditySeconds: 3600, ExpiresAt: start.Add(time.Hour), SendAt: sendAt, At: at}, md)}},
		{Stream: domain.AccountStream(account), Expected: eventstore.Exact(v), Events: []eventstore.EventData{eventstore.MustEvent(reserved, md)}},
	}
	ids := make([]string, len(to))
	for i, n := range to {
		ids[i] = ulid.Make().String()
		batch = append(batch, eventstore.StreamAppend{Stream: domain.MessageStream(ids[i]), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageAccepted{MessageID: ids[i], OrderID: orderID,
				AccountID: account, Index: i, To: n, Country: "DE", Body: "hello", Encoding: "gsm7", Segments: 1,
				Price: domain.Money{AmountMicros: pricePerMessage, Currency: "EUR"}, ExpiresAt: start.Add(time.Hour), SendAt: sendAt,
				At: at}, md)}})
	}
	_, err = f.store.AppendMulti(f.ctx, batch)
	require.NoError(f.t, err)
	return orderID, ids
}

func (f *fixture) message(id string) domain.Message {
	f.t.Helper()
	evs, err := f.store.ReadStream(f.ctx, domain.MessageStream(id), 1)
	require.NoError(f.t, err)
	var m domain.Message
	for _, e := range evs {
		ev, err := e.Decode()
		require.NoError(f.t, err)
		require.NoError(f.t, m.Apply(ev))
	}
	return m
}

// step runs a command on a message and appends what it returns.
func (f *fixture) step(id string, cmd func(m *domain.Message, at time.Time) (domain.Event, error)) {
	f.t.Helper()
	m := f.message(id)
	ev, err := cmd(&m, f.tick())
	require.NoError(f.t, err)
	_, err = f.store.Append(f.ctx, domain.MessageStream(id), eventstore.Exact(m.Version), eventstore.MustEvent(ev, f.md(m.AccountID, m.OrderID)))
	require.NoError(f.t, err)
}

func (f *fixture) queue(id string) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) { return m.Queue("job-"+id, at) })
}

func (f *fixture) route(id, provider string) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Route(domain.RouteDecision{RouteID: "de-mobile", Provider: provider, Reason: "highest priority healthy"}, at)
	})
}

func (f *fixture) submit(id string, latency time.Duration) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Submit(fmt.Sprintf("%s-%s-%d", m.Provider, id[20:], m.Attempt), latency, at)
	})
}

func (f *fixture) deliver(id string) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Deliver(m.Attempt, json.RawMessage(`{"status":"DELIVRD"}`), at, at)
	})
}

func (f *fixture) fail(id, code string, stage domain.Stage) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Fail(m.Attempt, domain.Failure{Code: code, Reason: code + " (test)", Stage: stage}, nil, at)
	})
}

func (f *fixture) cancel(id string) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) { return m.Cancel("key-1", "test", at) })
}

func (f *fixture) retry(id, code string, stage domain.Stage) {
	f.step(id, func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Retry(m.Attempt, domain.Failure{Code: code, Reason: code + " (test)", Stage: stage, Provider: m.Provider},
			at.Add(time.Second), nil, at)
	})
}

// deliverAll takes each message through one successful attempt.
func (f *fixture) deliverAll(ids ...string) {
	for _, id := range ids {
		f.queue(id)
		f.route(id, "sim-a")
		f.submit(id, 40*time.Millisecond)
		f.deliver(id)
	}
}

// settle charges the order's delivered messages, refunds the failed ones
// and completes the order, as the order tracker does.
func (f *fixture) settle(orderID string, ids ...string) {
	f.t.Helper()
	at := f.tick()
	var delivered, failed, canceled []string
	counts := domain.OrderCounts{}
	var account string
	for _, id := range ids {
		m := f.message(id)
		account = m.AccountID
		switch m.State {
		case domain.StateDelivered:
			delivered = append(delivered, id)
			counts.Delivered++
		case domain.StateFailed:
			failed = append(failed, id)
			counts.Failed++
			if m.Failure.Code == domain.CodeExpired {
				counts.Expired++
			}
		case domain.StateCanceled:
			canceled = append(canceled, id)
			counts.Canceled++
		default:
			f.t.Fatalf("settle: message %s is %s", id, m.State)
		}
	}
	a, v := f.account(account)
	md := f.md(account, orderID)
	var money []eventstore.EventData
	charged := domain.Money{AmountMicros: pricePerMessage * int64(len(delivered)), Currency: "EUR"}
	refunded := domain.Money{AmountMicros: pricePerMessage * int64(len(failed)+len(canceled)), Currency: "EUR"}
	if len(delivered) > 0 {
		e, err := a.Charge(orderID, charged, delivered, at)
		require.NoError(f.t, err)
		require.NoError(f.t, a.Apply(e))
		money = append(money, eventstore.MustEvent(e, md))
	}
	for _, r := range []struct {
		ids    []string
		reason string
	}{{failed, "failed"}, {canceled, "canceled"}} {
		if len(r.ids) == 0 {
			continue
		}
		e, err := a.Release(orderID, domain.Money{AmountMicros: pricePerMessage * int64(len(r.ids)), Currency: "EUR"}, r.ids, r.reason, at)
		require.NoError(f.t, err)
		require.NoError(f.t, a.Apply(e))
		money = append(money, eventstore.MustEvent(e, md))
	}
	batch := []eventstore.StreamAppend{{Stream: domain.OrderStream(orderID), Expected: eventstore.Exact(1), Events: []eventstore.EventData{
		eventstore.MustEvent(domain.OrderCompleted{Counts: counts, Charged: charged, Refunded: refunded, At: at}, md)}}}
	if len(money) > 0 {
		batch = append(batch, eventstore.StreamAppend{Stream: domain.AccountStream(account), Expected: eventstore.Exact(v), Events: money})
	}
	_, err := f.store.AppendMulti(f.ctx, batch)
	require.NoError(f.t, err)
}

// run starts a runner until the test ends.
func (f *fixture) run(cfg projections.Config) {
	f.t.Helper()
	f.t.Cleanup(f.start(cfg))
}

// start starts a runner and returns what stops it.
func (f *fixture) start(cfg projections.Config) (stop func()) {
	f.t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quiet
	}
	if cfg.Poll == 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	r, err := projections.NewRunner(withStore(cfg, f.store))
	require.NoError(f.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	return func() { cancel(); <-done }
}

// caughtUp waits until the named projections (default: all) have applied
// every committed event of their types.
func (f *fixture) caughtUp(names ...string) {
	f.t.Helper()
	storetest.Poll(f.t, 60*time.Second, func() (bool, string) {
		st, err := projections.Statuses(f.ctx, f.db.Pool, time.Now())
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st {
			if (len(names) == 0 || slices.Contains(names, s.Name)) && s.EventsBehind > 0 {
				return false, fmt.Sprintf("projections behind: %+v", st)
			}
		}
		return true, ""
	})
}

func (f *fixture) requireVerified() {
	f.t.Helper()
	rep, err := projections.Verify(f.ctx, f.db.Pool, nil)
	require.NoError(f.t, err)
	var b strings.Builder
	for _, d := range rep.Differences {
		b.WriteString("\n  " + d.String())
	}
	require.Empty(f.t, rep.Differences, "verify found differences:%s", b.String())
	require.NotZero(f.t, rep.Rows)
}

// dump renders every read-model table of a schema, ordered, for comparing
// two builds of the same history.
func (f *fixture) dump(schema string, only ...string) map[string][]string {
	f.t.Helper()
	out := map[string][]string{}
	for _, p := range projections.All() {
		if len(only) > 0 && !slices.Contains(only, p.Name) {
			continue
		}
		for _, table := range p.Tables {
			rows, err := f.db.Pool.Query(f.ctx, fmt.Sprintf(`SELECT t::text FROM %s.%s t ORDER BY 1`, schema, table))
			require.NoError(f.t, err)
			for rows.Next() {
				var s string
				require.NoError(f.t, rows.Scan(&s))
				out[table] = append(out[table], s)
			}
			require.NoError(f.t, rows.Err())
		}
	}
	return out
}

func withStore(cfg projections.Config, s *eventstore.Store) projections.Config {
	cfg.Store = s
	return cfg
}
