package receipts_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

var (
	secretA = []byte("secret of sim-a")
	secretB = []byte("secret of sim-b")
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// env is one isolated database with an intake mounted on the real API
// server, served over real HTTP.
type env struct {
	t      *testing.T
	ctx    context.Context
	db     *storetest.DB
	store  *eventstore.Store
	clock  *clock
	policy routing.RetryPolicy
	reg    *prometheus.Registry
	intake *receipts.Intake
	srv    *httptest.Server
}

func newEnv(t *testing.T, opts ...func(*receipts.Config)) *env {
	t.Helper()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	clk := &clock{now: time.Now().UTC().Truncate(time.Second)}
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := receipts.Config{
		Store:      store,
		Providers:  map[string][]byte{"sim-a": secretA, "sim-b": secretB},
		Retry:      routing.RetryPolicy{MaxAttempts: 3, Base: 5 * time.Second, Max: time.Minute},
		Now:        clk.Now,
		Logger:     quiet,
		Registerer: reg,
		Tolerance:  time.Minute,
	}
	for _, o := range opts {
		o(&cfg)
	}
	in, err := receipts.New(cfg)
	require.NoError(t, err)
	s, err := api.New(api.Deps{Store: store, Registry: reg, Logger: quiet, Now: clk.Now,
		Extra: []api.Route{in.Route()}}, api.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{t: t, ctx: context.Background(), db: db, store: store, clock: clk, policy: cfg.Retry,
		reg: reg, intake: in, srv: srv}
}

// md is the metadata of the events tests append in place of the API and
// the workers.
func md(orderID string) eventstore.Metadata {
	return eventstore.Metadata{AccountID: "acct-1", CorrelationID: orderID, Actor: "test"}
}

// newMessage opens a message of the given segments and walks attempt 1 up
// to state (accepted, queued, routed or submitted) with provider sim-a.
func (e *env) newMessage(segments int, state domain.MessageState) string {
	e.t.Helper()
	id, order := ulid.Make().String(), ulid.Make().String()
	now := e.clock.Now()
	e.append(id, domain.MessageAccepted{MessageID: id, OrderID: order, AccountID: "acct-1", To: "+4915112345678",
		Country: "DE", Body: "hello", Encoding: "gsm7", Segments: segments,
		Price: domain.Money{AmountMicros: 75000, Currency: "EUR"}, ExpiresAt: now.Add(time.Hour), At: now})
	steps := []domain.MessageState{domain.StateQueued, domain.StateRouted, domain.StateSubmitted}
	for _, s := range steps {
		if state == domain.StateAccepted {
			break
		}
		e.step(id, 1, s)
		if s == state {
			break
		}
	}
	return id
}

// step appends the event that brings attempt to state.
func (e *env) step(id string, attempt int, state domain.MessageState) {
	e.t.Helper()
	now := e.clock.Now()
	switch state {
	case domain.StateQueued:
		e.append(id, domain.MessageQueued{Attempt: attempt, At: now})
	case domain.StateRouted:
		e.append(id, domain.MessageRouted{Attempt: attempt, Route: domain.RouteDecision{RouteID: "r1", Provider: "sim-a", Reason: "test"}, At: now})
	case domain.StateSubmitted:
		e.append(id, domain.MessageSubmitted{Attempt: attempt, Provider: "sim-a", ProviderMessageID: pmid(id, attempt), At: now})
	case domain.StateRetried:
		e.append(id, domain.MessageRetried{Attempt: attempt, NextAttempt: attempt + 1, NotBefore: now,
			Failure: domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageSubmit}, At: now})
	default:
		e.t.Fatalf("no step to %s", state)
	}
}

// pmid is the provider message id the tests' sim-a gives an attempt.
func pmid(id string, attempt int) string { return "sim-a-" + id + "-" + strconv.Itoa(attempt) }

// append appends events to a message stream, as a worker would: checked
// by the domain first, at the stream's current version.
func (e *env) append(id string, events ...domain.Event) {
	e.t.Helper()
	m, version := e.message(id)
	var data []eventstore.EventData
	for _, ev := range events {
		require.NoError(e.t, m.Apply(ev), "test setup: %s", ev.EventType())
		data = append(data, eventstore.MustEvent(ev, md(m.OrderID)))
	}
	_, err := e.store.Append(e.ctx, domain.MessageStream(id), eventstore.Exact(version), data...) // Exact(0) is NoStream
	require.NoError(e.t, err)
}

// message folds a message's stream.
func (e *env) message(id string) (domain.Message, int) {
	e.t.Helper()
	var events []domain.Event
	for _, r := range e.events(id) {
		ev, err := r.Decode()
		require.NoError(e.t, err)
		events = append(events, ev)
	}
	m, err := domain.LoadMessage(events)
	require.NoError(e.t, err)
	return m, len(events)
}

func (e *env) state(id string) domain.MessageState {
	e.t.Helper()
	m, _ := e.message(id)
	return m.State
}

func (e *env) events(id string) []eventstore.RecordedEvent {
	e.t.Helper()
	evs, err := e.store.ReadStream(e.ctx, domain.MessageStream(id), 1)
	require.NoError(e.t, err)
	return evs
}

// eventsOf returns the message's events of one type.
func (e *env) eventsOf(id, typ string) []eventstore.RecordedEvent {
	e.t.Helper()
	var out []eventstore.RecordedEvent
	for _, r := range e.events(id) {
		if r.Type == typ {
			out = append(out, r)
		}
	}
	return out
}

// wire is one receipt as a provider sends it.
type wire struct {
	ID        string `json:"id"`
	Reference string `json:"reference"`
	Attempt   int    `json:"attempt"`
	Status    string `json:"status"`
	ErrorCode string `json:"error_code,omitempty"`
	DoneAt    string `json:"done_at"`
	Part      int    `json:"part"`
	Parts     int    `json:"parts"`
}

// rcpt is sim-a's receipt for part 1 of 1 of attempt 1 of message id.
func rcpt(id, status string) wire {
	return wire{ID: pmid(id, 1), Reference: id, Attempt: 1, Status: status,
		DoneAt: "2026-01-02T03:04:05.123Z", Part: 1, Parts: 1}
}

func (w wire) attempt(n int) wire { w.Attempt, w.ID = n, pmid(w.Reference, n); return w }
func (w wire) part(i, n int) wire { w.Part, w.Parts = i, n; return w }

// body is a receipts callback body.
func body(rs ...wire) []byte {
	if rs == nil {
		rs = []wire{}
	}
	b, _ := json.Marshal(map[string]any{"receipts": rs})
	return b
}

// sign is the provider's side of the signature scheme, written from its
// description rather than shared with the code under test.
func sign(secret []byte, at time.Time, body []byte) string {
	ts := strconv.FormatInt(at.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

type reply struct {
	status  int
	header  http.Header
	summary receipts.Summary
	problem map[string]any
}

// postRaw posts a body to a provider's endpoint with a signature header
// ("" for none).
func (e *env) postRaw(provider, signature string, b []byte) reply {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/receipts/"+provider, bytes.NewReader(b))
	require.NoError(e.t, err)
	req.Header.Set("Content-Type", "application/json")
	if signature != "" {
		req.Header.Set("X-Sandbox-Signature", signature)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(e.t, err)
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	require.NoError(e.t, err)
	out := reply{status: res.StatusCode, header: res.Header}
	if res.StatusCode == http.StatusOK {
		require.NoError(e.t, json.Unmarshal(raw, &out.summary), "%s", raw)
	} else {
		require.NoError(e.t, json.Unmarshal(raw, &out.problem), "%s", raw)
	}
	return out
}

// post posts receipts signed by sim-a, now.
func (e *env) post(rs ...wire) reply {
	e.t.Helper()
	b := body(rs...)
	return e.postRaw("sim-a", sign(secretA, e.clock.Now(), b), b)
}

// mustPost posts receipts signed by sim-a and requires a 200.
func (e *env) mustPost(rs ...wire) receipts.Summary {
	e.t.Helper()
	r := e.post(rs...)
	require.Equal(e.t, http.StatusOK, r.status, "problem: %v", r.problem)
	return r.summary
}

// row is a receipts table row, as far as tests look at it.
type row struct {
	Part        int
	Status      string
	Disposition string
	Reason      string
	Event       string // "" when no event is linked
	Resolved    bool
}

// rows returns the receipts rows of a message in arrival order.
func (e *env) rows(id string) []row {
	e.t.Helper()
	rs, err := e.db.Pool.Query(e.ctx, `SELECT part, status, disposition, coalesce(reason, ''),
    coalesce(event_id::text, ''), resolved_at IS NOT NULL FROM receipts WHERE message_id = $1 ORDER BY id`, id)
	require.NoError(e.t, err)
	defer rs.Close()
	var out []row
	for rs.Next() {
		var r row
		require.NoError(e.t, rs.Scan(&r.Part, &r.Status, &r.Disposition, &r.Reason, &r.Event, &r.Resolved))
		out = append(out, r)
	}
	require.NoError(e.t, rs.Err())
	return out
}

func (e *env) receiptCount() int {
	e.t.Helper()
	var n int
	require.NoError(e.t, e.db.Pool.QueryRow(e.ctx, `SELECT count(*) FROM receipts`).Scan(&n))
	return n
}

// metric returns the value of a series in the registry (0 if absent).
func (e *env) metric(name string, labels map[string]string) float64 {
	e.t.Helper()
	families, err := e.reg.Gather()
	require.NoError(e.t, err)
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
	series:
		for _, m := range f.GetMetric() {
			got := map[string]string{}
			for _, l := range m.GetLabel() {
				got[l.GetName()] = l.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue series
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return 0
}
