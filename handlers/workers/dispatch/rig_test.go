package dispatch_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// newWorker is the one place these tests build a Worker, so that a change
// of the constructor's shape is a one-line change here.
func newWorker(t *testing.T, cfg dispatch.Config) *dispatch.Worker {
	t.Helper()
	v, err := dispatch.New(cfg)
	require.NoError(t, err)
	return v
}

// answer is one scripted provider answer. A zero status with no body is an
// acceptance echoing the submission, as the sandbox protocol spells it.
type answer struct {
	status int
	header map[string]string
	body   string
	// delay holds the answer back (fault injection: longer than the
	// adapter's timeout, it makes the outcome unknown to the worker).
	delay time.Duration
}

// call is one submission the provider received.
type call struct {
	provider, key string
	attempt       int
}

// scriptedProvider is a real HTTP server speaking the sandbox protocol's
// single-message endpoint for every provider name; it answers each message
// by its script, call after call (the last answer repeats).
type scriptedProvider struct {
	mu     sync.Mutex
	script map[string][]answer
	calls  map[string][]call
}

func (p *scriptedProvider) expect(id string, answers ...answer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.script[id] = answers
}

func (p *scriptedProvider) callsOf(id string) []call {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]call(nil), p.calls[id]...)
}

func (p *scriptedProvider) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	var sub struct {
		Reference string `json:"reference"`
		Attempt   int    `json:"attempt"`
	}
	if err := json.NewDecoder(r.Body).Decode(&sub); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	n := len(p.calls[sub.Reference])
	p.calls[sub.Reference] = append(p.calls[sub.Reference], call{name, r.Header.Get("Idempotency-Key"), sub.Attempt})
	answers := p.script[sub.Reference]
	p.mu.Unlock()
	a := answer{}
	if len(answers) > 0 {
		a = answers[min(n, len(answers)-1)]
	}
	if a.delay > 0 {
		select {
		case <-time.After(a.delay):
		case <-r.Context().Done():
		}
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	w.Header().Set("Content-Type", "application/json")
	if a.status == 0 && a.body == "" {
		_, _ = fmt.Fprintf(w, `{"id":"p-%s-%d","status":"accepted","reference":%q,"attempt":%d}`, name, n, sub.Reference, sub.Attempt)
		return
	}
	w.WriteHeader(a.status)
	_, _ = w.Write([]byte(a.body))
}

// workerRig is a running worker on its own database and stream prefix,
// with sim-a and sim-b served by one scriptedProvider.
type workerRig struct {
	store    *eventstore.Store
	nats     *storetest.NATS
	provider *scriptedProvider
}

// rigTimeout is the adapter's per-request timeout: a scripted delay above
// it is a submission whose outcome the worker does not know.
const rigTimeout = 500 * time.Millisecond

// rigRetry allows two attempts, so that both a retry and the exhaustion of
// the attempts are one resubmission away.
var rigRetry = routing.RetryPolicy{MaxAttempts: 2, Base: time.Second, Max: time.Second}

func newWorkerRig(t *testing.T) *workerRig {
	t.Helper()
	db := storetest.NewDB(t)
	r := &workerRig{store: eventstore.New(db.Pool), nats: storetest.NewNATS(t),
		provider: &scriptedProvider{script: map[string][]answer{}, calls: map[string][]call{}}}
	srv := httptest.NewServer(r.provider)
	t.Cleanup(srv.Close)
	providers := map[string]provider.Provider{}
	for _, name := range []string{"sim-a", "sim-b"} {
		p, err := provider.NewHTTP(provider.HTTPConfig{Name: name, BaseURL: srv.URL, APIKey: "k", Timeout: rigTimeout})
		require.NoError(t, err)
		providers[name] = p
	}
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	// One job per batch: every submission goes through the single-message
	// endpoint, the one the script speaks.
	w := newWorker(t, dispatch.Config{Store: r.store, JetStream: r.nats.JS, Names: r.nats.Names, Providers: providers,
		Routes: routing.DefaultTable(), Breaker: breaker, Retry: rigRetry, BatchSize: 1, Fetchers: 2, AckWait: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		_, err := r.nats.JS.Consumer(ctx, r.nats.Names.DispatchStream(), "dispatch")
		return err == nil, "the worker's consumer"
	})
	return r
}

// message records a message accepted and queued for attempt 1, as the
// scheduler would, valid until expires, and returns its id.
func (r *workerRig) message(t *testing.T, expires time.Time) string {
	t.Helper()
	id := ulid.Make().String()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	acc := domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
		Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: expires, At: time.Now()}
	var m domain.Message
	require.NoError(t, m.Apply(acc))
	q, err := m.Queue("job", time.Now())
	require.NoError(t, err)
	_, err = r.store.Append(context.Background(), domain.MessageStream(id), eventstore.NoStream,
		eventstore.MustEvent(acc, md), eventstore.MustEvent(q, md))
	require.NoError(t, err)
	return id
}

// record appends what step makes of the message's current state.
func (r *workerRig) record(t *testing.T, id string, step func(m *domain.Message) (domain.Event, error)) {
	t.Helper()
	ctx := context.Background()
	recs, err := r.store.ReadStream(ctx, domain.MessageStream(id), 1)
	require.NoError(t, err)
	m, err := eventstore.LoadMessage(recs)
	require.NoError(t, err)
	ev, err := step(&m)
	require.NoError(t, err)
	_, err = r.store.Append(ctx, domain.MessageStream(id), eventstore.Exact(m.Version),
		eventstore.MustEvent(ev, eventstore.FollowUp(recs, "test")))
	require.NoError(t, err)
}

// publish hands the worker the job for one attempt and returns its stream
// sequence.
func (r *workerRig) publish(t *testing.T, id string, attempt int) uint64 {
	t.Helper()
	job := fmt.Sprintf(`{"message_id":%q,"attempt":%d,"account_id":"acc"}`, id, attempt)
	ack, err := r.nats.JS.Publish(context.Background(), r.nats.Names.DispatchSubject(id), []byte(job),
		jetstream.WithMsgID(fmt.Sprintf("%s:%d", id, attempt)))
	require.NoError(t, err)
	return ack.Sequence
}

// events returns the message's history.
func (r *workerRig) events(t *testing.T, id string) ([]string, []domain.Event) {
	t.Helper()
	recs, err := r.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
	require.NoError(t, err)
	evs, err := eventstore.DecodeAll(recs)
	require.NoError(t, err)
	types := make([]string, len(recs))
	for i, rec := range recs {
		types[i] = rec.Type
	}
	return types, evs
}

// waitEvents polls until the message's history has n events and returns it.
func (r *workerRig) waitEvents(t *testing.T, id string, n int) ([]string, []domain.Event) {
	t.Helper()
	storetest.Poll(t, 20*time.Second, func() (bool, string) {
		types, _ := r.events(t, id)
		return len(types) >= n, fmt.Sprintf("%d events, want %d: %v", len(types), n, types)
	})
	return r.events(t, id)
}

// waitAcked polls until the job at seq has left the work queue, which it
// does only when the worker acknowledged (or terminated) it.
func (r *workerRig) waitAcked(t *testing.T, seq uint64) {
	t.Helper()
	ctx := context.Background()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		st, err := r.nats.JS.Stream(ctx, r.nats.Names.DispatchStream())
		if err != nil {
			return false, err.Error()
		}
		_, err = st.GetMsg(ctx, seq)
		return errors.Is(err, jetstream.ErrMsgNotFound), fmt.Sprintf("job %d still queued (%v)", seq, err)
	})
}
