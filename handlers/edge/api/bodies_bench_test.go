package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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

// BenchmarkLargeBodiesMemory posts four ~10 MiB orders (20,000 messages
// of 480 characters) at once and reports how far the process's heap and
// its resident memory rise above where they started, per byte of the
// bodies that were accepted: without a budget all four are decoded
// together; with a budget of two bodies the other two are refused with
// 503 before they are read, so the peak is that of two.
//
//	go test -run '^$' -bench LargeBodiesMemory -benchtime 1x ./handlers/edge/api/
func BenchmarkLargeBodiesMemory(b *testing.B) {
	to := make([]map[string]any, 20_000)
	for i := range to {
		to[i] = map[string]any{"to": sim.ExampleDelivered, "body": strings.Repeat("x", 480)}
	}
	body, err := json.Marshal(map[string]any{"messages": to})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		budget int64
	}{{"unbounded", 1 << 40}, {"budget=2bodies", 2 * int64(len(body))}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newAPIBench(b, api.Config{RateLimit: 1e9, RateBurst: 1e9,
				MaxBodyBytes: int64(len(body)), BodyBudgetBytes: tc.budget})
			for range b.N {
				runtime.GC()
				debug.FreeOSMemory()
				_ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // reset the peak RSS (VmHWM)
				heap0, rss0 := heapBytes(), peakRSS()
				var peak atomic.Uint64
				stop := make(chan struct{})
				sampled := make(chan struct{})
				go func() {
					defer close(sampled)
					t := time.NewTicker(time.Millisecond)
					defer t.Stop()
					for {
						if h := heapBytes(); h > peak.Load() {
							peak.Store(h)
						}
						select {
						case <-stop:
							return
						case <-t.C:
						}
					}
				}()
				var accepted, refused atomic.Int64
				var wg sync.WaitGroup
				for range 4 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						switch status := postRaw(b, e.url, e.key, body); status {
						case 202:
							accepted.Add(1)
						case 503:
							refused.Add(1)
						default:
							b.Errorf("status %d", status)
						}
					}()
				}
				wg.Wait()
				close(stop)
				<-sampled
				rise := float64(peak.Load()-min(heap0, peak.Load())) / (1 << 20)
				rss := float64(peakRSS()-min(rss0, peakRSS())) / (1 << 20)
				inFlight := float64(accepted.Load()) * float64(len(body)) / (1 << 20)
				b.ReportMetric(float64(len(body))/(1<<20), "MiB/body")
				b.ReportMetric(float64(accepted.Load()), "accepted")
				b.ReportMetric(float64(refused.Load()), "refused")
				b.ReportMetric(rise, "heap-rise-MiB")
				b.ReportMetric(rss, "rss-rise-MiB")
				if inFlight > 0 {
					b.ReportMetric(rise/inFlight, "heap/body")
					b.ReportMetric(rss/inFlight, "rss/body")
				}
			}
		})
	}
}

// apiBench is an API server over its own database, with one account
// that can pay for anything.
type apiBench struct {
	url, key string
	db       *storetest.DB
	accounts *accounts.Service
}

func newAPIBench(b *testing.B, cfg api.Config) *apiBench {
	db := storetest.NewDBWith(b, eventstore.PoolConfig{MaxConns: 16})
	store := eventstore.New(db.Pool)
	acc := accounts.New(store, time.Now)
	acceptor := orders.New(store, time.Now, orders.Config{})
	b.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: acc, Acceptor: acceptor, Policy: accept.DefaultPolicy(),
		Registry: prometheus.NewRegistry(), Logger: quiet}, cfg)
	require.NoError(b, err)
	srv := httptest.NewServer(s)
	b.Cleanup(srv.Close)
	e := &apiBench{url: srv.URL, db: db, accounts: acc}
	e.key = e.account(b)
	return e
}

// account opens an account and returns its API key.
func (e *apiBench) account(b *testing.B) string {
	c, err := e.accounts.Create(context.Background(), accounts.NewAccount{Name: "bench",
		Credit: domain.Money{AmountMicros: 1 << 60, Currency: "EUR"}})
	if err != nil {
		b.Fatal(err)
	}
	return c.APIKey
}

func postRaw(b *testing.B, url, key string, body []byte) int {
	req, _ := http.NewRequest("POST", url+"/v1/orders", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// heapBytes is the heap's occupied bytes (live objects and garbage not
// yet swept): what the process must hold.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// peakRSS is the process's resident high-water mark (VmHWM).
func peakRSS() uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n << 10
		}
	}
	return 0
}
