package callbacks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/webhooks"
	"github.com/afterok/afterok/handlers/workers/callbacks"
)

type harness struct {
	t       *testing.T
	db      *storetest.DB
	store   *eventstore.Store
	svc     *webhooks.Service
	account string
}

// newHarness is a fresh database with one account; its webhooks service
// allows private targets (the receivers are on loopback).
func newHarness(t *testing.T, cfg webhooks.Config) *harness {
	db := storetest.NewDB(t)
	s := eventstore.New(db.Pool)
	acc, err := accounts.New(s, time.Now).Create(context.Background(), accounts.NewAccount{Name: "a",
		Credit: domain.Money{AmountMicros: 1 << 40, Currency: "EUR"}})
	require.NoError(t, err)
	cfg.Guard.AllowPrivate = true
	return &harness{t: t, db: db, store: s, svc: webhooks.New(s, cfg), account: acc.AccountID}
}

func (h *harness) endpoint(url string, types ...string) webhooks.Created {
	h.t.Helper()
	c, err := h.svc.Create(context.Background(), h.account, domain.WebhookSettings{URL: url, EventTypes: types}, accounts.Action{Actor: "key_test"})
	require.NoError(h.t, err)
	return c
}

// messages appends an order of n messages, each taken through queued,
// routed, submitted and delivered: 1 + 5n events on n+1 streams.
func (h *harness) messages(n int) []string {
	h.t.Helper()
	ctx := context.Background()
	order := ulid.Make().String()
	now := time.Now().UTC()
	md := eventstore.Metadata{AccountID: h.account, CorrelationID: order}
	money := domain.Money{AmountMicros: 100, Currency: "EUR"}
	appends := []eventstore.StreamAppend{{Stream: domain.OrderStream(order), Expected: eventstore.NoStream,
		Events: []eventstore.EventData{eventstore.MustEvent(domain.OrderAccepted{OrderID: order, AccountID: h.account,
			MessageCount: n, Price: money, At: now}, md)}}}
	var streams []string
	for i := range n {
		id := ulid.Make().String()
		streams = append(streams, domain.MessageStream(id))
		appends = append(appends, eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageAccepted{MessageID: id, OrderID: order,
				AccountID: h.account, Index: i, Price: money, ExpiresAt: now.Add(time.Hour), At: now}, md)}})
	}
	_, err := h.store.Append(ctx, appends[0].Stream, eventstore.NoStream, appends[0].Events...)
	require.NoError(h.t, err)
	for _, a := range appends[1:] {
		_, err := h.store.Append(ctx, a.Stream, eventstore.NoStream, a.Events...)
		require.NoError(h.t, err)
	}
	// The later steps in separate commits, interleaved across streams.
	steps := []domain.Event{domain.MessageQueued{Attempt: 1, At: now}, domain.MessageRouted{Attempt: 1, Route: domain.RouteDecision{Provider: "p"}, At: now},
		domain.MessageSubmitted{Attempt: 1, Provider: "p", ProviderMessageID: "x", At: now}, domain.MessageDelivered{Attempt: 1, At: now}}
	for v, e := range steps {
		for _, s := range streams {
			_, err := h.store.Append(ctx, s, eventstore.Exact(v+1), eventstore.MustEvent(e, md))
			require.NoError(h.t, err)
		}
	}
	return append([]string{domain.OrderStream(order)}, streams...)
}

// run starts a deliverer with test defaults (private targets allowed, a
// short poll) under cfg; stop stops it and waits.
func (h *harness) run(cfg callbacks.Config) (stop func()) {
	h.t.Helper()
	cfg.Guard.AllowPrivate = true
	return h.start(cfg)
}

// start is run with cfg's address rules as they are.
func (h *harness) start(cfg callbacks.Config) (stop func()) {
	h.t.Helper()
	cfg.Store, cfg.Webhooks = h.store, h.svc
	if cfg.Poll == 0 {
		cfg.Poll = 20 * time.Millisecond
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	d, err := callbacks.New(cfg)
	require.NoError(h.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx)
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	h.t.Cleanup(stop)
	return stop
}

// eventIDs are the ids of the events of the given types on the streams.
func (h *harness) events(streams []string, types ...string) map[string]eventstore.RecordedEvent {
	h.t.Helper()
	out := map[string]eventstore.RecordedEvent{}
	for _, s := range streams {
		recs, err := h.store.ReadStream(context.Background(), s, 1)
		require.NoError(h.t, err)
		for _, r := range recs {
			for _, ty := range types {
				if r.Type == ty {
					out[r.ID.String()] = r
				}
			}
		}
	}
	return out
}

// received is one request a receiver got.
type received struct {
	id, timestamp, signature string
	header                   http.Header
	body                     []byte
	at                       time.Time
	call                     int // this id's how-manieth request
	payload                  struct {
		Type      string `json:"type"`
		Timestamp string `json:"timestamp"`
		Data      struct {
			Position int64           `json:"position"`
			StreamID string          `json:"stream_id"`
			Version  int             `json:"version"`
			EventID  string          `json:"event_id"`
			Type     string          `json:"type"`
			Account  string          `json:"account_id"`
			Data     json.RawMessage `json:"data"`
			Metadata json.RawMessage `json:"metadata"`
		} `json:"data"`
	}
}

// receiver is a real HTTP server recording what it gets; answer chooses
// the status of each request (default 200).
type receiver struct {
	*httptest.Server
	mu     sync.Mutex
	got    []received
	calls  map[string]int
	answer func(r *received) int
}

func newReceiver(t *testing.T, answer func(r *received) int) *receiver {
	rc := &receiver{calls: map[string]int{}, answer: answer}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		b, _ := io.ReadAll(req.Body)
		r := received{id: req.Header.Get("webhook-id"), timestamp: req.Header.Get("webhook-timestamp"),
			signature: req.Header.Get("webhook-signature"), header: req.Header.Clone(), body: b, at: time.Now()}
		_ = json.Unmarshal(b, &r.payload)
		rc.mu.Lock()
		rc.calls[r.id]++
		r.call = rc.calls[r.id]
		rc.got = append(rc.got, r)
		rc.mu.Unlock()
		rc.mu.Lock()
		answer := rc.answer
		rc.mu.Unlock()
		status := 200
		if answer != nil {
			status = answer(&r)
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) setAnswer(f func(r *received) int) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.answer = f
}

func (rc *receiver) all() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

// distinct is how many different webhook-ids it got.
func (rc *receiver) distinct() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.calls)
}

// verify checks a request's signature with the reference library of the
// Standard Webhooks specification, not with our own code.
func verify(secret string, r received) error {
	wh, err := standardwebhooks.NewWebhook(secret)
	if err != nil {
		return err
	}
	return wh.Verify(r.body, r.header)
}

func redirectTo(url string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, url, http.StatusTemporaryRedirect)
	})
}

// waitOwedNothing waits until no delivery is owed: the last results are
// recorded a few milliseconds after the receiver answered.
func (h *harness) waitOwedNothing(t *testing.T) {
	t.Helper()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		var owed int
		require.NoError(t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries`).Scan(&owed))
		return owed == 0, "deliveries still owed"
	})
}
