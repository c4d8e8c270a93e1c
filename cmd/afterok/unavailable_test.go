package main

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// cutProxy forwards TCP connections to PostgreSQL until it is cut; from
// then on whatever a client sends — a query on a pooled connection, the
// startup message of a new one — is answered with a TCP reset, which is
// what a client sees while the database restarts.
type cutProxy struct {
	l      net.Listener
	target string
	wg     sync.WaitGroup

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]bool // open client connections, closed when the test ends
}

func newCutProxy(t *testing.T, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(func() {
		_ = l.Close()
		p.mu.Lock()
		p.cut = true
		for c := range p.conns {
			reset(c)
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) setCut(cut bool) { p.mu.Lock(); p.cut = cut; p.mu.Unlock() }
func (p *cutProxy) isCut() bool     { p.mu.Lock(); defer p.mu.Unlock(); return p.cut }

func (p *cutProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.l.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.pipe(c)
	}
}

// reset closes c with SO_LINGER 0: the peer gets RST, not FIN.
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

func (p *cutProxy) pipe(client net.Conn) {
	defer p.wg.Done()
	p.mu.Lock()
	p.conns[client] = true
	p.mu.Unlock()
	defer func() { p.mu.Lock(); delete(p.conns, client); p.mu.Unlock() }()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		reset(client)
		return
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); _, _ = io.Copy(client, server); reset(client) }()
	buf := make([]byte, 32<<10)
	for {
		n, err := client.Read(buf)
		if p.isCut() {
			reset(client)
			reset(server)
			return
		}
		if n > 0 {
			if _, werr := server.Write(buf[:n]); werr != nil {
				reset(client)
				return
			}
		}
		if err != nil {
			reset(server)
			return
		}
	}
}

// TestDependencyAwayIsUnavailable cuts the API's database connections in
// the middle of serving (queries on pooled connections meet "connection
// reset by peer", new connections are refused) and asserts that the API's
// reads and writes and the receipt intake all answer 503 unavailable with
// Retry-After — never a 500 — and serve again once the database is back.
func TestDependencyAwayIsUnavailable(t *testing.T) {
	h := newHarness(t)
	u, err := url.Parse(h.db.URL)
	require.NoError(t, err)
	proxy := newCutProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	h.cfg.DatabaseURL = u.String()
	h.start(dispatch.Hooks{}, roleAPI, roleReceipts)

	secret := []byte(h.cfg.Providers[0].Secret)
	receipt, _ := json.Marshal(map[string]any{"receipts": []map[string]any{{"id": "sim-a-x", "reference": ulid.Make().String(),
		"attempt": 1, "status": "delivered", "done_at": time.Now().UTC().Format(time.RFC3339), "part": 1, "parts": 1}}})
	requests := []struct {
		name, method, path string
		body               []byte
		header             map[string]string
	}{
		{"GET /v1/account", "GET", "/v1/account", nil, map[string]string{"Authorization": "Bearer " + h.key.APIKey}},
		{"POST /v1/orders", "POST", "/v1/orders", []byte(`{"to":["` + sim.ExampleDelivered + `"],"body":"hi"}`),
			map[string]string{"Authorization": "Bearer " + h.key.APIKey, "Idempotency-Key": "k1"}},
		{"POST /v1/receipts/sim-a", "POST", "/v1/receipts/" + h.cfg.Providers[0].Name, receipt,
			map[string]string{provider.SignatureHeader: signReceipt(secret, receipt)}},
	}
	do := func(method, path string, body []byte, header map[string]string) (*http.Response, map[string]any) {
		req, err := http.NewRequest(method, "http://"+h.cfg.Addr+path, bytes.NewReader(body))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		for k, v := range header {
			req.Header.Set(k, v)
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res, out
	}
	for _, rq := range requests {
		t.Run(rq.name, func(t *testing.T) {
			// Warm: the pool holds a fresh connection (one idle for less
			// than a second is used without a ping, so the cut meets the
			// query itself) and the key is authenticated.
			res, out := do("GET", "/v1/account", nil, requests[0].header)
			require.Equal(t, 200, res.StatusCode, "%v", out)
			proxy.setCut(true)
			res, out = do(rq.method, rq.path, rq.body, rq.header)
			proxy.setCut(false)
			require.Equal(t, 503, res.StatusCode, "%v", out)
			require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
			require.Equal(t, "unavailable", out["code"], "%v", out)
			secs, err := strconv.Atoi(res.Header.Get("Retry-After"))
			require.NoError(t, err, "Retry-After %q", res.Header.Get("Retry-After"))
			require.Positive(t, secs)
		})
	}
	// The database is back: the same order goes through (nothing of the
	// refused attempt was kept under its key).
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		res, out := do(requests[1].method, requests[1].path, requests[1].body, requests[1].header)
		return res.StatusCode == 202, fmt.Sprintf("%d %v", res.StatusCode, out)
	})
}

// signReceipt signs a receipts body as a provider does (written from the
// scheme's description, not shared with the intake).
func signReceipt(secret, body []byte) string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}
