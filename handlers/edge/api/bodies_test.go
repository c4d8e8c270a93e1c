package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// rawPost opens a connection to the test server and sends the head of a
// POST /v1/orders declaring length bytes of body; the caller sends the
// body (or not).
func rawPost(t *testing.T, e *env, key string, length int) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	_, err = fmt.Fprintf(conn, "POST /v1/orders HTTP/1.1\r\nHost: afterok\r\nAuthorization: Bearer %s\r\n"+
		"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", key, length)
	require.NoError(t, err)
	return conn
}

// trickle writes one byte every interval until the connection fails or
// stop closes; the returned channel closes when it has stopped.
func trickle(conn net.Conn, every time.Duration, stop <-chan struct{}) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(every)
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
	return done
}

// TestTrickledBodyIsCut: a body that arrives a byte at a time is cut
// once the grace has passed and it falls below the minimum rate: the
// client gets 408 request_timeout and the connection is closed, instead
// of being held for as long as the client likes.
func TestTrickledBodyIsCut(t *testing.T) {
	e := newEnv(t, api.Config{BodyGrace: 300 * time.Millisecond, BodyMinRate: 1000}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	events := e.eventCount()
	conn := rawPost(t, e, c.APIKey, 10_000)
	stop := make(chan struct{})
	done := trickle(conn, 100*time.Millisecond, stop)
	defer func() { close(stop); <-done }()

	start := time.Now()
	require.NoError(t, conn.SetReadDeadline(start.Add(10*time.Second)))
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "no answer to a trickled body")
	took := time.Since(start)
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 408, res.StatusCode, "%s", body)
	require.Equal(t, "application/problem+json", res.Header.Get("Content-Type"))
	var p map[string]any
	require.NoError(t, json.Unmarshal(body, &p))
	require.Equal(t, "request_timeout", p["code"], "%s", body)
	// 300 ms of grace plus a few bytes' worth at 1000 B/s; the margin is
	// for a busy machine, far below "forever".
	require.Less(t, took, 3*time.Second)
	_, err = br.ReadByte()
	require.ErrorIs(t, err, io.EOF, "the connection stays open after the cut")
	require.Equal(t, events, e.eventCount(), "a cut order wrote something")
}

// TestSteadyUploadOutlastsTheGrace: a legitimate body that takes longer
// than the grace to arrive, but at more than the minimum rate, is
// accepted: the deadline moves on with every byte.
func TestSteadyUploadOutlastsTheGrace(t *testing.T) {
	e := newEnv(t, api.Config{BodyGrace: 200 * time.Millisecond, BodyMinRate: 20_000}, accept.DefaultPolicy())
	c := e.account(1_000_000_000)
	to := make([]string, 700)
	for i := range to {
		to[i] = sim.ExampleDelivered
	}
	body, err := json.Marshal(order(to...))
	require.NoError(t, err)
	conn := rawPost(t, e, c.APIKey, len(body))
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond) // 2 KiB per tick: 40 KiB/s
	for rest := body; len(rest) > 0; {
		<-tick.C
		n := min(2048, len(rest))
		_, err := conn.Write(rest[:n])
		require.NoError(t, err)
		rest = rest[n:]
	}
	tick.Stop()
	require.Greater(t, time.Since(start), 500*time.Millisecond, "the upload must outlast the grace")
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(30*time.Second)))
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	out, _ := io.ReadAll(res.Body)
	res.Body.Close()
	require.Equal(t, 202, res.StatusCode, "%s", out)
}

// TestBodyBudget: while bodies being read hold the budget, another body
// that does not fit is refused at once with 503 and Retry-After (before
// it is read, when its length is declared; as it arrives, when chunked),
// and once they are done it is read again.
func TestBodyBudget(t *testing.T) {
	e := newEnv(t, api.Config{MaxBodyBytes: 100_000, BodyBudgetBytes: 150_000}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	holder := rawPost(t, e, c.APIKey, 100_000)
	_, err := holder.Write([]byte(`{"messages":[`))
	require.NoError(t, err)

	filler := strings.Repeat(" ", 60_000) // malformed: 400 whenever it is read
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		r := e.do("POST", "/v1/orders", c.APIKey, filler)
		return r.status == 503, fmt.Sprintf("status %d: %s", r.status, r.raw)
	})
	r := e.do("POST", "/v1/orders", c.APIKey, filler)
	requireProblem(t, r, 503, "unavailable")
	require.Equal(t, "1", r.header.Get("Retry-After"))
	chunked := e.do("POST", "/v1/orders", c.APIKey, io.MultiReader(strings.NewReader(filler)))
	requireProblem(t, chunked, 503, "unavailable")

	holder.Close()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		r := e.do("POST", "/v1/orders", c.APIKey, filler)
		return r.status == 400, fmt.Sprintf("status %d: %s", r.status, r.raw)
	})
}
