package sim_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// sink is a receipt intake for tests: it verifies and parses what the
// simulator posts with the production functions, and records it.
type sink struct {
	secrets map[string][]byte

	mu        sync.Mutex
	receipts  []provider.Receipt
	sizes     []int   // receipts per accepted request
	requests  int     // every request, refused or not
	refuse    int     // answer 500 to this many requests first
	refusals  []error // signature and parse failures
	onReceipt func()  // called, under mu, after receipts are recorded
}

func (k *sink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("provider")
	body, err := io.ReadAll(r.Body)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.requests++
	if err != nil || k.refuse > 0 {
		k.refuse--
		http.Error(w, "refused", http.StatusInternalServerError)
		return
	}
	if err := provider.VerifySignature(k.secrets[name], r.Header.Get(provider.SignatureHeader), body, time.Now(), time.Minute); err != nil {
		k.refusals = append(k.refusals, err)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	rs, err := provider.ParseReceipts(name, body)
	if err != nil {
		k.refusals = append(k.refusals, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	k.receipts = append(k.receipts, rs...)
	k.sizes = append(k.sizes, len(rs))
	if k.onReceipt != nil {
		k.onReceipt()
	}
	w.WriteHeader(http.StatusNoContent)
}

// byMessage returns the receipts recorded for a message id.
func (k *sink) byMessage(id string) []provider.Receipt {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []provider.Receipt
	for _, r := range k.receipts {
		if r.MessageID == id {
			out = append(out, r)
		}
	}
	return out
}

func (k *sink) count() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.receipts)
}

// harness is a running simulator with a sink as its callback target.
type harness struct {
	sim  *sim.Simulator
	url  string // the simulator's base URL
	sink *sink
	stop func() // cancels Run and waits for it; safe to call twice
}

func testProviders() map[string]sim.ProviderConfig {
	return map[string]sim.ProviderConfig{
		"sim-a": {APIKey: "key-a", Secret: "secret-a"},
		"sim-b": {APIKey: "key-b", Secret: "secret-b"},
	}
}

// start runs a fast simulator (no latency, immediate receipts) adjusted by
// tune, with Run owned by the test and stopped at cleanup.
func start(t *testing.T, tune func(*sim.Config)) *harness {
	t.Helper()
	k := &sink{secrets: map[string][]byte{}}
	for name, p := range testProviders() {
		k.secrets[name] = []byte(p.Secret)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/receipts/{provider}", k)
	sinkSrv := httptest.NewServer(mux)
	t.Cleanup(sinkSrv.Close)

	cfg := sim.Config{
		Providers:      testProviders(),
		CallbackBase:   sinkSrv.URL,
		ReceiptBatch:   50,
		ReceiptFlush:   2 * time.Millisecond,
		ReceiptRetries: 3,
		ReceiptBackoff: time.Millisecond,
		DrainTimeout:   5 * time.Second,
	}
	if tune != nil {
		tune(&cfg)
	}
	s, err := sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Error("Run did not return within 10 s of its context ending")
			}
		})
	}
	t.Cleanup(stop)
	return &harness{sim: s, url: srv.URL, sink: k, stop: stop}
}

// errorsAsSignature reports whether err is a signature refusal of kind p.
func errorsAsSignature(err error, p provider.SignatureProblem) bool {
	var se *provider.SignatureError
	return errors.As(err, &se) && se.Problem == p
}
