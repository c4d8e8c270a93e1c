package provider_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
)

func accounts() map[string]sim.ProviderConfig {
	return map[string]sim.ProviderConfig{
		"sim-a": {APIKey: "key-a", Secret: "secret-a"},
		"sim-b": {APIKey: "key-b", Secret: "secret-b"},
	}
}

// env is the simulator serving on 127.0.0.1 with a receipt intake beside it
// that checks every callback with VerifySignature and ParseReceipts.
type env struct {
	t       *testing.T
	sim     *sim.Simulator
	simURL  string
	stop    func()
	batches atomic.Int64 // batch requests the simulator received
	conns   atomic.Int64 // connections opened to the simulator

	mu       sync.Mutex
	receipts []provider.Receipt
	refusals []error
}

func newEnv(t *testing.T, tune func(*sim.Config)) *env {
	t.Helper()
	e := &env{t: t}
	intake := http.NewServeMux()
	intake.HandleFunc("POST /v1/receipts/{provider}", e.intake)
	sink := httptest.NewServer(intake)
	t.Cleanup(sink.Close)

	cfg := sim.Config{
		Providers:      accounts(),
		CallbackBase:   sink.URL,
		ReceiptFlush:   time.Millisecond,
		ReceiptBackoff: time.Millisecond,
		ReceiptRetries: 3,
	}
	if tune != nil {
		tune(&cfg)
	}
	var err error
	e.sim, err = sim.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	handler := e.sim.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/batch") {
			e.batches.Add(1)
		}
		handler.ServeHTTP(w, r)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			e.conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	e.simURL = srv.URL

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := e.sim.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	e.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Error("the simulator did not stop")
			}
		})
	}
	t.Cleanup(e.stop)
	return e
}

func (e *env) intake(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("provider")
	body, _ := io.ReadAll(r.Body)
	e.mu.Lock()
	defer e.mu.Unlock()
	secret := []byte(accounts()[name].Secret)
	if err := provider.VerifySignature(secret, r.Header.Get(provider.SignatureHeader), body, time.Now(), time.Minute); err != nil {
		e.refusals = append(e.refusals, err)
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	rs, err := provider.ParseReceipts(name, body)
	if err != nil {
		e.refusals = append(e.refusals, err)
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	e.receipts = append(e.receipts, rs...)
	w.WriteHeader(http.StatusNoContent)
}

// receiptsFor returns the receipts recorded so far for a message.
func (e *env) receiptsFor(id string) []provider.Receipt {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []provider.Receipt
	for _, r := range e.receipts {
		if r.MessageID == id {
			out = append(out, r)
		}
	}
	return out
}

// waitReceipt polls until a receipt for id has arrived.
func (e *env) waitReceipt(id string) provider.Receipt {
	e.t.Helper()
	storetest.Poll(e.t, 5*time.Second, func() (bool, string) { return len(e.receiptsFor(id)) > 0, "a receipt for " + id })
	return e.receiptsFor(id)[0]
}

func (e *env) adapter(name string, tune func(*provider.HTTPConfig)) *provider.HTTP {
	e.t.Helper()
	cfg := provider.HTTPConfig{Name: name, BaseURL: e.simURL, APIKey: accounts()[name].APIKey, Timeout: 5 * time.Second}
	if tune != nil {
		tune(&cfg)
	}
	h, err := provider.NewHTTP(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}
