package main

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestBadProviderURLFailsBeforeTheAPIListens: every role is built before
// any port opens, so a provider URL that does not parse fails the start
// with the API's port never accepting a connection. The dispatch workers
// used to be built after the API was already serving.
func TestBadProviderURLFailsBeforeTheAPIListens(t *testing.T) {
	h := newHarness(t)
	h.cfg.Providers[0].URL = "http://[::1" // unparsable
	var accepted atomic.Bool
	probeCtx, stopProbe := context.WithCancel(context.Background())
	probed := make(chan struct{})
	go func() { // knocks on the API's port for as long as the start runs
		defer close(probed)
		for probeCtx.Err() == nil {
			if c, err := net.DialTimeout("tcp", h.cfg.Addr, 50*time.Millisecond); err == nil {
				c.Close()
				accepted.Store(true)
			}
		}
	}()

	_, err := start(context.Background(), h.env(), map[string]bool{roleAPI: true, roleDispatch: true}, dispatch.Hooks{})
	require.ErrorContains(t, err, h.cfg.Providers[0].Name)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = runServe(ctx, h.env(), []string{"--roles", "all"})
	stopProbe()
	<-probed
	require.ErrorContains(t, err, "not an http(s) URL")
	require.False(t, accepted.Load(), "the API's port accepted a connection before the start failed")
}

// TestShutdownStopsEveryRole runs every role with an order in flight and
// an event stream open, stops the system, and finds none of its goroutines
// left: the API's shared tail of event streams used to outlive the server
// (Shutdown waited for the open stream until its timeout, and the tail's
// reader then retried on a closed pool for ever).
func TestShutdownStopsEveryRole(t *testing.T) {
	h := newHarness(t)
	// What the harness runs for the whole test (its simulator, the test
	// database's pool) is not the system's.
	before := map[string]bool{}
	for _, g := range goroutines() {
		before[g.id] = true
	}
	h.start(dispatch.Hooks{})
	order, _ := h.order(0, sim.ExampleDelivered)
	h.waitOrdersCompleted(30*time.Second, order)

	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	req, err := http.NewRequest("GET", "http://"+h.cfg.Addr+"/v1/events/stream", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+h.key.APIKey)
	res, err := client.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	require.Equal(t, http.StatusOK, res.StatusCode)
	first, err := bufio.NewReader(res.Body).ReadString('\n') // the stream is open and attached
	require.NoError(t, err)
	require.NotEmpty(t, strings.TrimSpace(first))

	stopped := time.Now()
	h.stop()
	require.Less(t, time.Since(stopped), 10*time.Second, "shutdown waited for the open event stream")
	// The last of the system's goroutines (the NATS connection's) end
	// just after Close returns.
	storetest.Poll(t, 5*time.Second, func() (bool, string) {
		var left []string
		for _, g := range goroutines() {
			if !before[g.id] && g.systems() {
				left = append(left, g.stack)
			}
		}
		return len(left) == 0, strings.Join(left, "\n\n")
	})
}

// goroutine is one goroutine of a runtime.Stack dump.
type goroutine struct{ id, stack string }

func goroutines() []goroutine {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []goroutine
	for _, g := range strings.Split(string(buf), "\n\n") {
		id, _, _ := strings.Cut(strings.TrimPrefix(g, "goroutine "), " ")
		out = append(out, goroutine{id: id, stack: g})
	}
	return out
}

// systems reports whether the goroutine runs afterok's code or a client
// the system owns (its pool, its NATS connection), and not the test's
// simulator or embedded NATS server.
func (g goroutine) systems() bool {
	if strings.Contains(g.stack, "handlers/provider/sim.") || strings.Contains(g.stack, "nats-server/v2/") {
		return false
	}
	for _, pkg := range []string{"github.com/afterok/afterok/", "github.com/jackc/pgx/", "github.com/nats-io/nats.go"} {
		if strings.Contains(g.stack, pkg) {
			return true
		}
	}
	return false
}
