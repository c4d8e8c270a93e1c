package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/afterok/afterok/handlers/workers/callbacks"
)

// benchReceiver is `afterok bench --webhook-receiver`'s local endpoint: it
// registers itself for every order and message event of the bench
// account and measures each callback's lag, from the event's recording
// (the body's timestamp) to its arrival here.
type benchReceiver struct {
	srv    *http.Server
	url    string
	secret string

	mu      sync.Mutex
	seen    map[string]bool
	lags    []time.Duration
	dups    int
	bad     int
	first   time.Time
	last    time.Time
	arrived chan struct{}
}

func startBenchReceiver(addr string) (*benchReceiver, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("webhook receiver: %w", err)
	}
	r := &benchReceiver{url: "http://" + l.Addr().String() + "/bench", seen: map[string]bool{}, arrived: make(chan struct{}, 1)}
	r.srv = &http.Server{Handler: http.HandlerFunc(r.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = r.srv.Serve(l) }()
	return r, nil
}

func (r *benchReceiver) serve(w http.ResponseWriter, req *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(req.Body)
	var p struct {
		Timestamp time.Time `json:"timestamp"`
	}
	_ = json.Unmarshal(body, &p)
	id, ts := req.Header.Get("webhook-id"), req.Header.Get("webhook-timestamp")
	n, _ := strconv.ParseInt(ts, 10, 64)
	valid := slices.Contains(strings.Fields(req.Header.Get("webhook-signature")), callbacks.Sign([]string{r.secret}, id, n, body))
	r.mu.Lock()
	switch {
	case !valid:
		r.bad++
	case r.seen[id]:
		r.dups++
	default:
		r.seen[id] = true
		r.lags = append(r.lags, now.Sub(p.Timestamp))
		if r.first.IsZero() {
			r.first = now
		}
		r.last = now
	}
	r.mu.Unlock()
	select {
	case r.arrived <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusNoContent)
}

// register creates the endpoint on the bench account.
func (r *benchReceiver) register(ctx context.Context, b *bench) error {
	body, _ := json.Marshal(map[string]any{"url": r.url, "description": "afterok bench receiver"})
	req, _ := http.NewRequestWithContext(ctx, "POST", b.url+"/v1/webhooks", bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+b.key)
	req.Header.Set("Content-Type", "application/json")
	res, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var out struct {
		Secret string `json:"secret"`
	}
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusCreated || json.Unmarshal(raw, &out) != nil {
		return fmt.Errorf("register the webhook receiver: status %d: %s", res.StatusCode, raw)
	}
	r.mu.Lock()
	r.secret = out.Secret
	r.mu.Unlock()
	return nil
}

// drain waits until no callback has come for quiet (or until ctx ends).
func (r *benchReceiver) drain(ctx context.Context, quiet time.Duration) {
	t := time.NewTimer(quiet)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.arrived:
			t.Reset(quiet)
		case <-t.C:
			return
		}
	}
}

// webhookReport is the receiver's part of the bench report.
type webhookReport struct {
	Callbacks  int     `json:"callbacks"`
	Duplicates int     `json:"duplicates"`
	BadSigs    int     `json:"bad_signatures"`
	LagP50     float64 `json:"lag_p50_ms"`
	LagP99     float64 `json:"lag_p99_ms"`
	LagMax     float64 `json:"lag_max_ms"`
	PerSecond  float64 `json:"callbacks_per_second"`
	// AfterLastFinal is how long after the last final state the last
	// callback came.
	AfterLastFinal float64 `json:"last_callback_after_last_final_seconds"`
}

func (r *benchReceiver) report(lastFinal time.Time) *webhookReport {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := &webhookReport{Callbacks: len(r.seen), Duplicates: r.dups, BadSigs: r.bad}
	if len(r.lags) == 0 {
		return out
	}
	lags := slices.Clone(r.lags)
	slices.Sort(lags)
	out.LagP50, out.LagP99, out.LagMax = ms(pct(lags, 0.5)), ms(pct(lags, 0.99)), ms(lags[len(lags)-1])
	if span := r.last.Sub(r.first).Seconds(); span > 0 {
		out.PerSecond = float64(len(lags)) / span
	}
	out.AfterLastFinal = r.last.Sub(lastFinal).Seconds()
	return out
}

func (r *benchReceiver) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = r.srv.Shutdown(ctx)
}

func (w *webhookReport) String() string {
	return fmt.Sprintf("  webhooks         %d callbacks (%d duplicates, %d bad signatures), %.0f/s; lag p50 %.0f ms   p99 %.0f ms   max %.0f ms from the event's recording; last one %.2f s after the last final state\n",
		w.Callbacks, w.Duplicates, w.BadSigs, w.PerSecond, w.LagP50, w.LagP99, w.LagMax, w.AfterLastFinal)
}
