package api_test

import (
	"context"
	"io"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/afterok/afterok/handlers/edge/api"
)

// BenchmarkReadsBesideIdleStreams measures another tenant's GET latency
// while one account holds 200 idle event streams open, beside the same
// GETs with no stream open, in the same run; and the store queries those
// streams cost per second (connections taken from the pool).
//
//	go test -run '^$' -bench ReadsBesideIdleStreams -benchtime 1x ./handlers/edge/api/
func BenchmarkReadsBesideIdleStreams(b *testing.B) {
	const streams = 200
	e := newAPIBench(b, api.Config{RateLimit: 1e9, RateBurst: 1e9, MaxStreamsPerAccount: streams})
	streamer, other := e.account(b), e.account(b)
	url := e.url
	for range b.N {
		base := getLatencies(b, url, other, 300)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range streams {
			req, _ := http.NewRequestWithContext(ctx, "GET", url+"/v1/events/stream?heartbeat=300", nil)
			req.Header.Set("Authorization", "Bearer "+streamer)
			res, err := http.DefaultClient.Do(req)
			if err != nil || res.StatusCode != 200 {
				b.Fatalf("stream: %v %v", err, res)
			}
			wg.Add(1)
			go func() { defer wg.Done(); _, _ = io.Copy(io.Discard, res.Body); res.Body.Close() }()
		}
		// A window of nothing but the idle streams: what they cost.
		acquired, start := e.db.Pool.Stat().AcquireCount(), time.Now()
		time.Sleep(2 * time.Second)
		idle := float64(e.db.Pool.Stat().AcquireCount()-acquired) / time.Since(start).Seconds()
		with := getLatencies(b, url, other, 300)
		cancel()
		wg.Wait()
		b.ReportMetric(float64(base[len(base)/2].Microseconds())/1000, "p50-ms-no-streams")
		b.ReportMetric(float64(with[len(with)/2].Microseconds())/1000, "p50-ms-200-streams")
		b.ReportMetric(float64(with[len(with)*99/100].Microseconds())/1000, "p99-ms-200-streams")
		b.ReportMetric(idle, "stream-queries/s")
	}
}

func getLatencies(b *testing.B, url, key string, n int) []time.Duration {
	out := make([]time.Duration, 0, n)
	for range n {
		req, _ := http.NewRequest("GET", url+"/v1/account", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		start := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("status %d", res.StatusCode)
		}
		out = append(out, time.Since(start))
	}
	slices.Sort(out)
	return out
}
