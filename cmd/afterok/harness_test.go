package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/callbacks"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// harness is a whole afterok (any roles) against the test's own database
// and JetStream, with a provider simulator that outlives restarts of the
// system so that its duplicate count covers them.
type harness struct {
	t    *testing.T
	db   *storetest.DB
	nats *storetest.NATS
	cfg  Config
	// sim is the simulator in the test's process; simURL, when sim is nil,
	// one running as a process of its own (the cluster tests).
	sim     *sim.Simulator
	simURL  string
	simStop context.CancelFunc
	// verify checks the store's every stream; nil runs eventstore.VerifyOK
	// here (the cluster tests run `afterok verify --projections`).
	verify func()
	// simSaw records when the simulator first received each message id.
	simSaw  *submissionRecord
	key     accounts.Created
	running *running
	// credit is the test account's opening credit in micros.
	credit int64
	// logs, when set, receives every log line of the system, debug
	// included (tests that check what is logged).
	logs io.Writer
	// webhookHooks are passed to the webhooks role (its fault tests).
	webhookHooks callbacks.Hooks
}

type running struct {
	sys    *system
	cancel context.CancelFunc
	done   chan error
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	return l.Addr().String()
}

func newHarness(t *testing.T) *harness {
	return newHarnessOn(t, storetest.NewDB(t), storetest.NewNATS(t))
}

// newHarnessOn is newHarness on a database and a JetStream the test chose
// (outage tests own the servers they stop).
func newHarnessOn(t *testing.T, db *storetest.DB, n *storetest.NATS) *harness {
	h := &harness{t: t, db: db, nats: n, credit: 100_000_000}
	cfg, err := LoadConfig(func(string) string { return "" })
	require.NoError(t, err)
	cfg.DatabaseURL, cfg.NATSURL, cfg.Prefix = h.db.URL, h.nats.URL, h.nats.Names.Prefix
	cfg.Addr, cfg.SimAddr = freeAddr(t), freeAddr(t)
	cfg.DataDir = t.TempDir()
	cfg.DBMaxConns = 16
	cfg.RateLimit, cfg.RateBurst = 10_000, 10_000
	cfg.Retry.Base, cfg.Retry.Max = 50*time.Millisecond, 200*time.Millisecond
	cfg.DispatchAckWait = 3 * time.Second // a crashed worker's jobs come back quickly
	cfg.NATSEventsMaxBytes = storetest.TestEventsMaxBytes
	cfg.Providers = simProviders("http://" + cfg.SimAddr)
	h.cfg = cfg

	sc := sim.DefaultConfig()
	sc.CallbackBase = "http://" + cfg.Addr
	sc.SubmitLatency, sc.SubmitJitter, sc.ReceiptDelay, sc.ReceiptFlush = 2*time.Millisecond, time.Millisecond, 20*time.Millisecond, 10*time.Millisecond
	sc.ReceiptBackoff, sc.ReceiptMaxBackoff = 100*time.Millisecond, time.Second // receipts wait out outages (default max age: hours)
	sc.DedupWindow = 10 * time.Minute
	h.sim, err = sim.New(sc)
	require.NoError(h.t, err)
	l, err := net.Listen("tcp", cfg.SimAddr)
	require.NoError(t, err)
	h.simSaw = &submissionRecord{next: h.sim.Handler(), first: map[string]time.Time{}}
	srv := &http.Server{Handler: h.simSaw}
	ctx, cancel := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { defer close(simDone); _ = h.sim.Run(ctx) }()
	go func() { _ = srv.Serve(l) }()
	h.simStop = cancel
	t.Cleanup(func() {
		h.stop()
		_ = srv.Close()
		cancel()
		<-simDone
	})
	return h
}

func (h *harness) env() *environment {
	level := slog.LevelWarn
	if os.Getenv("AFTEROK_TEST_LOG") != "" {
		level = slog.LevelDebug
	}
	var out io.Writer = os.Stderr
	if h.logs != nil {
		out, level = h.logs, slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: level}))
	return &environment{cfg: h.cfg, stdout: io.Discard, stderr: io.Discard, log: log, webhookHooks: h.webhookHooks}
}

// start runs the system's roles (not the simulator: the harness owns it).
func (h *harness) start(hooks dispatch.Hooks, roles ...string) *running {
	h.t.Helper()
	if len(roles) == 0 {
		roles = allRoles
	}
	rs := map[string]bool{}
	for _, r := range roles {
		rs[r] = true
	}
	ctx, cancel := context.WithCancel(context.Background())
	s, err := start(ctx, h.env(), rs, hooks)
	require.NoError(h.t, err)
	require.NoError(h.t, s.listen())
	r := &running{sys: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	h.running = r
	if h.key.APIKey == "" {
		c, err := s.accounts.Create(context.Background(), accounts.NewAccount{Name: "e2e",
			Credit: domain.Money{AmountMicros: h.credit, Currency: "EUR"}})
		require.NoError(h.t, err)
		h.key = c
	}
	return r
}

// stop shuts the running system down (gracefully) and waits.
func (h *harness) stop() {
	if h.running == nil {
		return
	}
	h.running.cancel()
	select {
	case <-h.running.done:
	case <-time.After(60 * time.Second):
		h.t.Error("system did not stop within 60s")
	}
	h.running = nil
}

// waitStopped waits for a system that a hook crashed.
func (h *harness) waitStopped() {
	select {
	case <-h.running.done:
	case <-time.After(60 * time.Second):
		h.t.Fatal("system did not stop after the injected crash")
	}
	h.running = nil
}

// simStats are the simulator's counters, wherever it runs.
func (h *harness) simStats() sim.Stats {
	h.t.Helper()
	if h.sim != nil {
		return h.sim.Stats()
	}
	res, err := http.Get(h.simURL + "/stats")
	require.NoError(h.t, err)
	defer res.Body.Close()
	require.Equal(h.t, http.StatusOK, res.StatusCode)
	var st sim.Stats
	require.NoError(h.t, json.NewDecoder(res.Body).Decode(&st))
	return st
}

// post sends like a careful client: with an Idempotency-Key, retrying a
// 503 (the database was briefly away) or a 502 (the balancer in front of
// several processes lost the one it had asked) with the same key.
func (h *harness) post(path string, body any) (int, map[string]any) {
	h.t.Helper()
	b, _ := json.Marshal(body)
	key := fmt.Sprintf("test-%d", time.Now().UnixNano())
	for attempt := 0; ; attempt++ {
		req, _ := http.NewRequest("POST", "http://"+h.cfg.Addr+path, bytes.NewReader(b))
		req.Header.Set("Authorization", "Bearer "+h.key.APIKey)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", key)
		res, err := http.DefaultClient.Do(req)
		require.NoError(h.t, err)
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		res.Body.Close()
		if (res.StatusCode == 503 || res.StatusCode == 502) && attempt < 20 {
			time.Sleep(100 * time.Millisecond) // client back-off before retrying
			continue
		}
		return res.StatusCode, out
	}
}

// order submits an order and returns its id and message ids in order.
func (h *harness) order(validity int, to ...string) (string, []string) {
	h.t.Helper()
	body := map[string]any{"to": to, "body": "Hello from the end-to-end test"}
	if validity > 0 {
		body["validity_seconds"] = validity
	}
	status, out := h.post("/v1/orders", body)
	require.Equal(h.t, 202, status, "%v", out)
	var ids []string
	for _, m := range out["messages"].([]any) {
		ids = append(ids, m.(map[string]any)["message_id"].(string))
	}
	return out["order_id"].(string), ids
}

// history returns each stream's event types (from the store itself).
func (h *harness) history(stream string) []eventstore.RecordedEvent {
	h.t.Helper()
	recs, err := eventstore.ReadStream(context.Background(), h.db.Pool, stream, 1)
	require.NoError(h.t, err)
	return recs
}

func types(recs []eventstore.RecordedEvent) string {
	var out []string
	for _, r := range recs {
		out = append(out, strings.TrimPrefix(r.Type, "Message"))
	}
	return strings.Join(out, ",")
}

// waitOrdersCompleted polls until every order has OrderCompleted.
func (h *harness) waitOrdersCompleted(timeout time.Duration, orders ...string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pending := 0
		for _, o := range orders {
			recs := h.history(domain.OrderStream(o))
			if len(recs) < 2 || recs[len(recs)-1].Type != "OrderCompleted" {
				pending++
			}
		}
		if pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			h.dumpStuck(orders)
			h.t.Fatalf("%d of %d orders not completed within %s", pending, len(orders), timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling the store with a deadline
	}
}

func (h *harness) dumpStuck(orders []string) {
	rows, err := h.db.Pool.Query(context.Background(), `SELECT stream_id, string_agg(type, ',' ORDER BY stream_version)
		FROM events WHERE metadata->>'correlation_id' = ANY($1) AND stream_id LIKE 'message-%'
		GROUP BY stream_id HAVING bool_and(type NOT IN ('MessageDelivered','MessageFailed')) LIMIT 20`, orders)
	if err != nil {
		return
	}
	defer rows.Close()
	var stuck []string
	for rows.Next() {
		var s, t string
		_ = rows.Scan(&s, &t)
		h.t.Logf("not final: %s: %s", s, t)
		stuck = append(stuck, strings.TrimPrefix(s, "message-"))
	}
	rows.Close()
	rrows, err := h.db.Pool.Query(context.Background(), `SELECT message_id, attempt, status, disposition, coalesce(reason, '')
		FROM receipts WHERE message_id = ANY($1)`, stuck)
	if err == nil {
		for rrows.Next() {
			var id, st, disp, reason string
			var a int
			_ = rrows.Scan(&id, &a, &st, &disp, &reason)
			h.t.Logf("  receipt %s a%d %s %s %s", id, a, st, disp, reason)
		}
		rrows.Close()
	}
	h.t.Logf("simulator: %+v", h.simStats())
}

// submissionRecord wraps the simulator's HTTP API and notes when each
// message id (a submission's reference, single or batched) first reached
// it: what a provider got to see, and when.
type submissionRecord struct {
	next  http.Handler
	mu    sync.Mutex
	first map[string]time.Time
}

func (s *submissionRecord) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var one struct {
			Reference string `json:"reference"`
		}
		var batch struct {
			Messages []struct {
				Reference string `json:"reference"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(body, &one)
		_ = json.Unmarshal(body, &batch)
		now := time.Now()
		s.mu.Lock()
		for _, ref := range append([]string{one.Reference}, func() (out []string) {
			for _, m := range batch.Messages {
				out = append(out, m.Reference)
			}
			return out
		}()...) {
			if _, ok := s.first[ref]; ref != "" && !ok {
				s.first[ref] = now
			}
		}
		s.mu.Unlock()
	}
	s.next.ServeHTTP(w, r)
}

// saw reports when the simulator first received id, if it did.
func (s *submissionRecord) saw(id string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.first[id]
	return at, ok
}

// checkInvariants: every message of the orders has exactly one final
// event, the simulator saw no duplicate send, and verify passes.
func (h *harness) checkInvariants(orders ...string) {
	h.t.Helper()
	ctx := context.Background()
	var notOne int
	require.NoError(h.t, h.db.Pool.QueryRow(ctx, `SELECT count(*) FROM (
		SELECT stream_id FROM events WHERE metadata->>'correlation_id' = ANY($1) AND stream_id LIKE 'message-%'
		GROUP BY stream_id HAVING count(*) FILTER (WHERE type IN ('MessageDelivered','MessageFailed','MessageCanceled')) <> 1) x`,
		orders).Scan(&notOne))
	require.Zero(h.t, notOne, "messages without exactly one final event")
	st := h.simStats()
	require.Zero(h.t, st.DuplicateSubmissions, "the simulator saw the same attempt sent twice: %+v", st)
	if h.verify != nil {
		h.verify()
	} else {
		require.NoError(h.t, eventstore.VerifyOK(ctx, h.db.Pool))
	}
	a, err := accounts.Load(ctx, h.db.Pool, h.key.AccountID)
	require.NoError(h.t, err)
	require.Zero(h.t, a.Reserved, "completed orders leave nothing reserved")
}
