package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/edge/api"

	"net/http/httptest"
)

type benchEnv struct {
	db  *storetest.DB
	srv *httptest.Server
	key string
}

func newBenchEnv(b *testing.B) *benchEnv {
	db := storetest.NewDBWith(b, eventstore.PoolConfig{MaxConns: 24})
	store := eventstore.New(db.Pool)
	acc := accounts.New(store, time.Now)
	acceptor := orders.New(store, time.Now, orders.Config{})
	b.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: acc, Acceptor: acceptor, Policy: accept.DefaultPolicy(),
		Registry: prometheus.NewRegistry(), Logger: quiet}, api.Config{RateLimit: 1e9, RateBurst: 1e9})
	require.NoError(b, err)
	srv := httptest.NewServer(s)
	b.Cleanup(srv.Close)
	c, err := acc.Create(context.Background(), accounts.NewAccount{Name: "bench",
		Credit: domain.Money{AmountMicros: 1 << 60, Currency: "EUR"}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Pool.Exec(context.Background(), `CREATE TABLE events_baseline (LIKE events INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	return &benchEnv{db: db, srv: srv, key: c.APIKey}
}

func (e *benchEnv) post(b *testing.B, client *http.Client, body []byte) (map[string]any, time.Duration) {
	req, _ := http.NewRequest("POST", e.srv.URL+"/v1/orders", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+e.key)
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	res, err := client.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	d := time.Since(start)
	if res.StatusCode != 202 {
		b.Fatalf("status %d: %.300s", res.StatusCode, raw)
	}
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return out, d
}

// BenchmarkAcceptBulkOrder posts one 10,000-message order through HTTP to
// its 202 and then COPYs the very event rows that order wrote into a
// scratch copy of the events table, in the same run: the ratio is the
// target (≥ 0.5).
func BenchmarkAcceptBulkOrder(b *testing.B) {
	const n = 10_000
	e := newBenchEnv(b)
	msgs := make([]map[string]string, n)
	for i := range msgs {
		msgs[i] = map[string]string{"to": fmt.Sprintf("+49151%08d", 10_000_000+i), "body": "Your code is 123456. It expires in 10 minutes."}
	}
	body, _ := json.Marshal(map[string]any{"messages": msgs})
	client := &http.Client{}
	ctx := context.Background()
	var postTime, copyTime time.Duration
	for i := 0; i < b.N; i++ {
		runtime.GC()
		out, d := e.post(b, client, body)
		postTime += d
		b.StopTimer()
		rows, err := e.db.Pool.Query(ctx, `SELECT stream_id, stream_version, event_id, type, schema_version, account_id,
			data, metadata, recorded_at, prev_hash, hash FROM events WHERE metadata->>'correlation_id' = $1`, out["order_id"])
		if err != nil {
			b.Fatal(err)
		}
		copied, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]any, error) { return r.Values() })
		if err != nil || len(copied) != n+2 {
			b.Fatalf("read back %d rows: %v", len(copied), err)
		}
		if _, err := e.db.Pool.Exec(ctx, `TRUNCATE events_baseline`); err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		if _, err := e.db.Pool.CopyFrom(ctx, pgx.Identifier{"events_baseline"}, []string{"stream_id", "stream_version", "event_id",
			"type", "schema_version", "account_id", "data", "metadata", "recorded_at", "prev_hash", "hash"}, pgx.CopyFromRows(copied)); err != nil {
			b.Fatal(err)
		}
		copyTime += time.Since(start)
		b.StartTimer()
	}
	rate := float64(n*b.N) / postTime.Seconds()
	copyRate := float64((n+2)*b.N) / copyTime.Seconds()
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(copyRate, "copy-rows/s")
	b.ReportMetric(rate/copyRate, "ratio-to-copy")
}

// BenchmarkAcceptSingleMessageOrders has 50 concurrent clients post
// single-message orders to one account, and reports p50/p99 accept latency
// beside the latency of GET /healthz under the same concurrency (the floor
// of the HTTP stack on this machine, measured in the same run).
func BenchmarkAcceptSingleMessageOrders(b *testing.B) {
	const clients, perClient = 50, 40
	e := newBenchEnv(b)
	body := []byte(`{"messages":[{"to":"+4915112345678","body":"Your code is 123456."}]}`)
	tr := &http.Transport{MaxIdleConnsPerHost: clients}
	client := &http.Client{Transport: tr}
	measure := func(do func() time.Duration) []time.Duration {
		var mu sync.Mutex
		var all []time.Duration
		var wg sync.WaitGroup
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				local := make([]time.Duration, 0, perClient)
				for range perClient {
					local = append(local, do())
				}
				mu.Lock()
				all = append(all, local...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		slices.Sort(all)
		return all
	}
	pct := func(d []time.Duration, p float64) float64 {
		return float64(d[int(float64(len(d)-1)*p)].Microseconds()) / 1000
	}
	// Warm up: connections, pools and prepared statements are made once.
	measure(func() time.Duration { _, d := e.post(b, client, body); return d })
	b.ResetTimer()
	var lat, floor []time.Duration
	var wall time.Duration
	for i := 0; i < b.N; i++ {
		floor = append(floor, measure(func() time.Duration {
			start := time.Now()
			res, err := client.Get(e.srv.URL + "/healthz")
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			return time.Since(start)
		})...)
		start := time.Now()
		lat = append(lat, measure(func() time.Duration { _, d := e.post(b, client, body); return d })...)
		wall += time.Since(start)
	}
	slices.Sort(lat)
	slices.Sort(floor)
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.90), "p90-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	b.ReportMetric(pct(lat, 1), "max-ms")
	b.ReportMetric(float64(len(lat))/wall.Seconds(), "orders/s")
	b.ReportMetric(pct(floor, 0.50), "healthz-p50-ms")
	b.ReportMetric(pct(floor, 0.99), "healthz-p99-ms")
}
