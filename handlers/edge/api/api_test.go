package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// quiet discards the request log lines tests would otherwise print.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

type env struct {
	t        *testing.T
	db       *storetest.DB
	store    *eventstore.Store
	accounts *accounts.Service
	srv      *httptest.Server
	api      *api.Server
}

func newEnv(t *testing.T, cfg api.Config, policy accept.Policy) *env {
	t.Helper()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	acc := accounts.New(store, time.Now)
	acceptor := orders.New(store, time.Now, orders.Config{})
	t.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: acc, Acceptor: acceptor, Policy: policy,
		Registry: prometheus.NewRegistry(), Logger: quiet, Ready: map[string]func(context.Context) error{"postgres": db.Pool.Ping}}, cfg)
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, store: store, accounts: acc, srv: srv, api: s}
}

func (e *env) account(credit int64, scopes ...string) accounts.Created {
	e.t.Helper()
	c, err := e.accounts.Create(context.Background(), accounts.NewAccount{Name: "Acme",
		Credit: domain.Money{AmountMicros: credit, Currency: "EUR"}, Scopes: scopes})
	require.NoError(e.t, err)
	return c
}

type reply struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (e *env) do(method, path, key string, body any, hdr ...string) reply {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	case io.Reader: // sent chunked
		rd = b
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	require.NoError(e.t, err)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return reply{status: res.StatusCode, header: res.Header, body: m, raw: raw}
}

func (e *env) eventCount() int {
	var n int
	require.NoError(e.t, e.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&n))
	return n
}

func (e *env) balance(id string) domain.Account {
	a, err := accounts.Load(context.Background(), e.db.Pool, id)
	require.NoError(e.t, err)
	return a
}

func order(to ...string) map[string]any {
	msgs := []map[string]any{}
	for _, t := range to {
		msgs = append(msgs, map[string]any{"to": t, "body": "Hello from afterok"})
	}
	return map[string]any{"messages": msgs}
}

func requireProblem(t *testing.T, r reply, status int, code string) {
	t.Helper()
	require.Equal(t, status, r.status, "%s", r.raw)
	require.Equal(t, "application/problem+json", r.header.Get("Content-Type"))
	require.Equal(t, code, r.body["code"], "%s", r.raw)
	require.EqualValues(t, status, r.body["status"])
	require.NotEmpty(t, r.body["title"])
	require.NotEmpty(t, r.body["detail"])
	require.NotEmpty(t, r.body["request_id"])
}

func TestAcceptOrder(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	r := e.do("POST", "/v1/orders", c.APIKey, map[string]any{
		"messages": []map[string]any{
			{"to": sim.ExampleDelivered, "body": "Hi", "from": "Acme"},
			{"to": sim.ExampleDelivered, "body": strings.Repeat("x", 200)},
		},
		"validity_seconds": 600, "metadata": map[string]any{"campaign": "welcome"},
	})
	require.Equal(t, 202, r.status, "%s", r.raw)
	require.Equal(t, "accepted", r.body["status"])
	require.EqualValues(t, 2, r.body["message_count"])
	require.Equal(t, map[string]any{"amount_micros": float64(225000), "currency": "EUR"}, r.body["price"])
	msgs := r.body["messages"].([]any)
	require.Len(t, msgs, 2)
	m1 := msgs[1].(map[string]any)
	require.EqualValues(t, 2, m1["segments"])
	require.Equal(t, sim.ExampleDelivered, m1["to"])
	orderID := r.body["order_id"].(string)
	require.Equal(t, "/v1/orders/"+orderID, r.header.Get("Location"))
	require.Contains(t, r.body["links"].(map[string]any)["order"], orderID)

	a := e.balance(c.AccountID)
	require.Equal(t, int64(10_000_000-225000), a.Balance)
	require.Equal(t, int64(225000), a.Reserved)
	acct := e.do("GET", "/v1/account", c.APIKey, nil)
	require.Equal(t, 200, acct.status)
	require.Equal(t, map[string]any{"amount_micros": float64(10_000_000 - 225000), "currency": "EUR"}, acct.body["balance"])
	require.Equal(t, map[string]any{"amount_micros": float64(225000), "currency": "EUR"}, acct.body["reserved"])
	require.Equal(t, "EUR", acct.body["currency"])

	// One transaction: OrderAccepted, BalanceReserved, MessageAccepted × 2.
	// The tail shows them once no older transaction on the server is open.
	var evs []eventstore.RecordedEvent
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		var err error
		evs, _, err = e.store.ReadAll(context.Background(), eventstore.Cursor{}, 100, eventstore.Filter{AccountID: c.AccountID})
		return err == nil && len(evs) >= 7, fmt.Sprintf("%d events in the tail (err %v)", len(evs), err)
	})
	types := map[string]int{}
	var xid uint64
	for _, ev := range evs {
		types[ev.Type]++
		if ev.Type != "AccountOpened" && ev.Type != "AccountCredited" && ev.Type != "APIKeyIssued" {
			if xid == 0 {
				xid = ev.XID
			}
			require.Equal(t, xid, ev.XID, "all in one transaction")
			require.Equal(t, orderID, ev.Metadata.CorrelationID)
			require.Equal(t, c.KeyID, ev.Metadata.Actor)
		}
	}
	require.Equal(t, map[string]int{"AccountOpened": 1, "AccountCredited": 1, "APIKeyIssued": 1,
		"OrderAccepted": 1, "BalanceReserved": 1, "MessageAccepted": 2}, types)

	// The broadcast form.
	r = e.do("POST", "/v1/orders", c.APIKey, map[string]any{"to": []string{sim.ExampleDelivered, sim.ExampleFailover}, "body": "Sale!"})
	require.Equal(t, 202, r.status, "%s", r.raw)
	require.EqualValues(t, 2, r.body["message_count"])
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

// TestRejectionsWriteNothing drives every error code and checks that a
// rejected request leaves the events and the balance as they were.
func TestRejectionsWriteNothing(t *testing.T) {
	pol := accept.DefaultPolicy()
	pol.MaxMessages = 5
	e := newEnv(t, api.Config{MaxBodyBytes: 4096}, pol)
	c := e.account(100_000) // enough for one message
	reader := e.account(1_000_000, accounts.ScopeMessagesRead)
	before := e.eventCount()
	bal := e.balance(c.AccountID)

	cases := []struct {
		name   string
		key    string
		body   any
		hdr    []string
		status int
		code   string
	}{
		{"no key", "", order(sim.ExampleDelivered), nil, 401, "unauthenticated"},
		{"unknown key", "aok_nope_nope", order(sim.ExampleDelivered), nil, 401, "unauthenticated"},
		{"missing scope", reader.APIKey, order(sim.ExampleDelivered), nil, 403, "forbidden"},
		{"malformed", c.APIKey, `{"messages": [`, nil, 400, "invalid_request"},
		{"not json", c.APIKey, `hello`, nil, 400, "invalid_request"},
		{"wrong type", c.APIKey, `{"messages":[{"to": 4915112345678, "body": "x"}]}`, nil, 400, "invalid_request"},
		{"unknown field", c.APIKey, `{"messages":[], "priority": "high"}`, nil, 400, "invalid_request"},
		{"unknown message field", c.APIKey, `{"messages":[{"to":"+4915112345678","body":"x","sender":"y"}]}`, nil, 400, "invalid_request"},
		{"trailing data", c.APIKey, `{"messages":[]} {}`, nil, 400, "invalid_request"},
		{"bad idempotency key", c.APIKey, order(sim.ExampleDelivered), []string{"Idempotency-Key", "has space"}, 400, "invalid_request"},
		{"too many messages", c.APIKey, order(sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered,
			sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleDelivered), nil, 413, "too_large"},
		{"too many bytes", c.APIKey, map[string]any{"to": []string{sim.ExampleDelivered}, "body": strings.Repeat("x", 5000)}, nil, 413, "too_large"},
		{"invalid", c.APIKey, order("+49", "12345", sim.ExampleDelivered), nil, 422, "validation_failed"},
		{"empty", c.APIKey, `{"messages":[]}`, nil, 422, "validation_failed"},
		// Text the store cannot hold is refused before the commit, not a 500 from it.
		{"NUL in body", c.APIKey, `{"messages":[{"to":"+4915112345678","body":"a\u0000"}]}`, nil, 422, "validation_failed"},
		{"NUL in metadata", c.APIKey, `{"to":["+4915112345678"],"body":"x","metadata":{"k":{"\u0000":1}}}`, nil, 422, "validation_failed"},
		{"lone surrogate in metadata", c.APIKey, `{"to":["+4915112345678"],"body":"x","metadata":{"k":"\udfff"}}`, nil, 422, "validation_failed"},
		{"invalid UTF-8 in body", c.APIKey, "{\"to\":[\"+4915112345678\"],\"body\":\"\xff\"}", nil, 422, "validation_failed"},
		{"validity as a string", c.APIKey, `{"to":["+4915112345678"],"body":"x","validity_seconds":"60"}`, nil, 400, "invalid_request"},
		{"repeated key", c.APIKey, `{"to":["+4915112345678"],"body":"x","body":"y"}`, nil, 400, "invalid_request"},
		{"insufficient", c.APIKey, order(sim.ExampleDelivered, sim.ExampleDelivered), nil, 402, "insufficient_balance"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do("POST", "/v1/orders", tc.key, tc.body, tc.hdr...)
			requireProblem(t, r, tc.status, tc.code)
			require.Equal(t, before, e.eventCount(), "a rejected request wrote events")
			require.Equal(t, bal, e.balance(c.AccountID), "a rejected request moved money")
		})
	}

	r := e.do("POST", "/v1/orders", c.APIKey, order("+49", "004915112345678", sim.ExampleDelivered))
	errs := r.body["errors"].([]any)
	require.Len(t, errs, 2, "every bad message, not just the first")
	first := errs[0].(map[string]any)
	require.EqualValues(t, 0, first["index"])
	require.Equal(t, "to", first["field"])
	require.Equal(t, "invalid_number", first["code"])
	require.Equal(t, "not_e164", errs[1].(map[string]any)["code"])

	r = e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered, sim.ExampleDelivered))
	require.EqualValues(t, 150000, r.body["required"].(map[string]any)["amount_micros"])
	require.EqualValues(t, 100000, r.body["available"].(map[string]any)["amount_micros"])

	requireProblem(t, e.do("GET", "/v1/nothing", c.APIKey, nil), 404, "not_found")
	r = e.do("DELETE", "/v1/orders", c.APIKey, nil)
	requireProblem(t, r, 405, "method_not_allowed")
	require.Equal(t, "GET, POST", r.header.Get("Allow"), "POST accepts orders, GET lists them")
	require.Equal(t, `Bearer realm="afterok"`, e.do("GET", "/v1/account", "", nil).header.Get("WWW-Authenticate"))
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 1, RateBurst: 3}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	other := e.account(1_000_000)
	for i := range 3 {
		require.Equal(t, 200, e.do("GET", "/v1/account", c.APIKey, nil).status, "request %d within the burst", i)
	}
	r := e.do("GET", "/v1/account", c.APIKey, nil)
	requireProblem(t, r, 429, "rate_limited")
	require.Equal(t, "1", r.header.Get("Retry-After"))
	require.Equal(t, 200, e.do("GET", "/v1/account", other.APIKey, nil).status, "limits are per account")
}

func TestIdempotentReplays(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(10_000_000)
	body := order(sim.ExampleDelivered, sim.ExampleUndeliverable)

	first := e.do("POST", "/v1/orders", c.APIKey, body, "Idempotency-Key", "k-1")
	require.Equal(t, 202, first.status)
	again := e.do("POST", "/v1/orders", c.APIKey, body, "Idempotency-Key", "k-1")
	require.Equal(t, 202, again.status)
	require.Equal(t, "true", again.header.Get("Idempotent-Replayed"))
	require.Equal(t, first.raw, again.raw, "the original response, byte for byte")
	require.Equal(t, int64(10_000_000-150000), e.balance(c.AccountID).Balance, "charged once")

	requireProblem(t, e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered), "Idempotency-Key", "k-1"), 409, "idempotency_conflict")

	// Another account's identical key is its own.
	other := e.account(1_000_000)
	r := e.do("POST", "/v1/orders", other.APIKey, body, "Idempotency-Key", "k-1")
	require.Equal(t, 202, r.status)
	require.NotEqual(t, first.body["order_id"], r.body["order_id"])

	// Racing duplicates: one order, one charge, every racer gets its id.
	const racers = 12
	var wg sync.WaitGroup
	ids := make([]string, racers)
	statuses := make([]int, racers)
	start := make(chan struct{})
	for i := range racers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			r := e.do("POST", "/v1/orders", c.APIKey, body, "Idempotency-Key", "race")
			statuses[i] = r.status
			if id, ok := r.body["order_id"].(string); ok {
				ids[i] = id
			}
		}()
	}
	close(start)
	wg.Wait()
	for i := range racers {
		require.Equal(t, 202, statuses[i])
		require.Equal(t, ids[0], ids[i])
	}
	require.Equal(t, int64(10_000_000-2*150000), e.balance(c.AccountID).Balance, "the race charged once")
	var orders int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE type = 'OrderAccepted' AND account_id = $1`, c.AccountID).Scan(&orders))
	require.Equal(t, 2, orders)
}

// TestConcurrentReservationsNeverOverdraw fires many concurrent orders at
// one account whose balance covers only some of them.
func TestConcurrentReservationsNeverOverdraw(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	const price, fits, clients, perClient = 75000, 37, 16, 5
	c := e.account(price * fits)
	var wg sync.WaitGroup
	var mu sync.Mutex
	accepted, refused := 0, 0
	for range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perClient {
				r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered))
				mu.Lock()
				switch {
				case r.status == 202:
					accepted++
				case r.status == 402:
					refused++
				default:
					t.Errorf("unexpected %d %s", r.status, r.raw)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	require.Equal(t, fits, accepted, "exactly as many orders as the balance covers")
	require.Equal(t, clients*perClient-fits, refused)
	a := e.balance(c.AccountID)
	require.Equal(t, int64(0), a.Balance)
	require.Equal(t, int64(price*fits), a.Reserved, "no reservation lost")
	var reservations int
	require.NoError(t, e.db.Pool.QueryRow(context.Background(),
		`SELECT count(*) FROM events WHERE type = 'BalanceReserved' AND account_id = $1`, c.AccountID).Scan(&reservations))
	require.Equal(t, fits, reservations)
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	require.Equal(t, 200, e.do("GET", "/healthz", "", nil).status)
	r := e.do("GET", "/readyz", "", nil)
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.Equal(t, "ready", r.body["status"])
	c := e.account(1_000_000)
	e.do("POST", "/v1/orders", c.APIKey, order("+49"))
	res, err := http.Get(e.srv.URL + "/metrics")
	require.NoError(t, err)
	defer res.Body.Close()
	m, _ := io.ReadAll(res.Body)
	require.Contains(t, string(m), `afterok_api_rejections_total{code="validation_failed"} 1`)
	require.Contains(t, string(m), `afterok_http_requests_total{method="POST",route="/v1/orders",status="422"} 1`)
	e.db.Pool.Close()
	r = e.do("GET", "/readyz", "", nil)
	require.Equal(t, 503, r.status)
	require.Equal(t, "failing", r.body["checks"].(map[string]any)["postgres"].(map[string]any)["status"])
	_ = fmt.Sprint()
}

// TestLargeOrdersWhileTheAccountMoves sends large orders (which reserve
// under the account's lock only after writing their messages) while
// another writer keeps moving the same account, as the tracker's
// settlements do: every order is accepted, nothing is lost, and the
// balances add up.
func TestLargeOrdersWhileTheAccountMoves(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000_000)
	// The mover stops between transactions, not by cancelling one: a
	// commit interrupted by a cancelled context can succeed on the server
	// and still report an error, and the count below must be exact.
	ctx := context.Background()
	stopMover, mover := make(chan struct{}), make(chan int)
	go func() {
		n := 0
		defer func() { mover <- n }()
		for {
			select {
			case <-stopMover:
				return
			default:
			}
			err := e.store.InTx(ctx, func(tx *eventstore.Tx) error {
				a, err := accounts.LoadForUpdate(ctx, tx, c.AccountID)
				if err != nil {
					return err
				}
				ev, err := a.Credit(domain.Money{AmountMicros: 1, Currency: "EUR"}, "test", time.Now())
				if err != nil {
					return err
				}
				_, err = tx.Append(ctx, eventstore.StreamAppend{Stream: domain.AccountStream(c.AccountID),
					Expected: eventstore.Exact(a.Version), Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.Metadata{AccountID: c.AccountID})}})
				return err
			})
			if err == nil {
				n++
			}
		}
	}()
	to := make([]string, 600)
	for i := range to {
		to[i] = fmt.Sprintf("+49151%08d", 20_000_000+i)
	}
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2 {
				r := e.do("POST", "/v1/orders", c.APIKey, map[string]any{"to": to, "body": "x"})
				if r.status != 202 {
					t.Errorf("status %d: %.200s", r.status, r.raw)
				}
			}
		}()
	}
	wg.Wait()
	close(stopMover)
	credits := <-mover
	require.Positive(t, credits, "the account moved during the orders")
	a := e.balance(c.AccountID)
	require.Equal(t, int64(12*600*75000), a.Reserved)
	require.Equal(t, int64(1_000_000_000+credits-12*600*75000), a.Balance)
	require.NoError(t, eventstore.VerifyOK(context.Background(), e.db.Pool))
}
