package receipts_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

// TestTrickledReceiptGets408: the API's body guard cuts a receipt body
// sent a byte at a time, and the intake passes the guard's refusal on as
// it is (408, which a provider retries), not as a malformed receipt (400,
// which a provider would give up on).
func TestTrickledReceiptGets408(t *testing.T) {
	store := eventstore.New(storetest.NewDB(t).Pool)
	reg := prometheus.NewRegistry()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	in, err := receipts.New(receipts.Config{Store: store, Providers: map[string][]byte{"sim-a": secretA},
		Retry: routing.RetryPolicy{MaxAttempts: 3, Base: 5 * time.Second, Max: time.Minute},
		Now:   time.Now, Logger: quiet, Registerer: reg, Tolerance: time.Minute})
	require.NoError(t, err)
	s, err := api.New(api.Deps{Store: store, Registry: reg, Logger: quiet, Extra: []api.Route{in.Route()}},
		api.Config{BodyGrace: 300 * time.Millisecond, BodyMinRate: 1000})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)

	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /v1/receipts/sim-a HTTP/1.1\r\nHost: afterok\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
	require.NoError(t, err)
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := conn.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	defer func() { close(stop); <-done }()

	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer res.Body.Close()
	var p map[string]any
	require.NoError(t, json.NewDecoder(res.Body).Decode(&p))
	require.Equal(t, 408, res.StatusCode, "%v", p)
	require.Equal(t, "request_timeout", p["code"])
}
