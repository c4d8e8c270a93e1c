package api_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// TestNewStreamStartsAtTheHead: a stream opened without Last-Event-ID or
// ?after= sends none of the account's history, only what happens after
// it opened; ?after=0 asks for the history from the beginning.
func TestNewStreamStartsAtTheHead(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	for range 3 {
		e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered)
	}
	history := e.settled(c.AccountID, c.APIKey)
	require.NotEmpty(t, history)

	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, "")
	s.waitHeartbeat(t, 10*time.Second)
	require.Zero(t, s.received(), "a new stream replayed the account's history")
	orderID, _ := e.placeOrder(c.APIKey, sim.ExampleDelivered)
	ev := s.next(t, 10*time.Second)
	require.Equal(t, orderID, ev.data["metadata"].(map[string]any)["correlation_id"], "%+v", ev)
	require.NotContains(t, history, ev.id)

	all := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1&after=0", c.APIKey, "")
	for _, p := range history {
		require.Equal(t, p, all.next(t, 10*time.Second).id)
	}
}

// TestANewStreamIsLiveWhenItAnswers places an order the moment a new
// stream has answered 200, while the stream is slow to join the live tail
// (held up to a second before it joins): the order's events reach the
// stream. A stream that answered before joining treated them as history
// it had opened after, and never sent them.
func TestANewStreamIsLiveWhenItAnswers(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	placed := make(chan struct{})
	e.api.SetBeforeAttach(func() {
		select {
		case <-placed:
		case <-time.After(time.Second):
		}
	})
	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, "")
	orderID, _ := e.placeOrder(c.APIKey, sim.ExampleDelivered)
	close(placed)
	ev := s.next(t, 10*time.Second)
	require.Equal(t, orderID, ev.data["metadata"].(map[string]any)["correlation_id"], "%+v", ev)
}

// settled waits until the gap-safe tail has passed every committed event
// of the account (the horizon trails the transactions open anywhere in
// the cluster), and returns the account's positions in tail order.
func (e *readEnv) settled(account, key string) []string {
	e.t.Helper()
	var all []string
	storetest.Poll(e.t, 30*time.Second, func() (bool, string) {
		var n int
		require.NoError(e.t, e.db.Pool.QueryRow(context.Background(),
			`SELECT count(*) FROM events WHERE account_id = $1`, account).Scan(&n))
		all = e.pullPositions(key, "0")
		return len(all) == n, fmt.Sprintf("the tail shows %d of %d events", len(all), n)
	})
	return all
}

// pullPositions pages through GET /v1/events after a position and returns
// the positions in the order the API serves them (the tail order).
func (e *readEnv) pullPositions(key, after string) []string {
	e.t.Helper()
	var out []string
	for {
		r := e.get("/v1/events?limit=1000&after="+after, key)
		evs := r.body["events"].([]any)
		for _, ev := range evs {
			out = append(out, jsonNumber(ev.(map[string]any)["position"].(float64)))
		}
		next := jsonNumber(r.body["next_after"].(float64))
		if len(evs) == 0 || next == after {
			return out
		}
		after = next
	}
}

// TestStreamResumeHandsOverToTheLiveTail: a stream that resumes from an
// old position reads what it missed from the store, then joins the live
// tail that other streams are already following, while writers append
// all along. It gets exactly the events after its position, each once,
// in the same order as GET /v1/events serves them.
func TestStreamResumeHandsOverToTheLiveTail(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	other := e.account(1_000_000_000)
	for range 40 {
		e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered)
	}
	early := e.settled(c.AccountID, c.APIKey)[5]
	// The live tail is running (someone else follows the account), and
	// writers keep appending while the resumed stream catches up.
	watcher := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, "")
	watcher.waitHeartbeat(t, 10*time.Second)
	stop := make(chan struct{})
	var writers sync.WaitGroup
	for _, key := range []string{c.APIKey, c.APIKey, other.APIKey} {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, ids := e.placeOrder(key, sim.ExampleDelivered, sim.ExampleDelivered)
				e.advance(ids[0], queue, route("sim-a"))
			}
		}()
	}
	var once sync.Once
	stopWriters := func() { once.Do(func() { close(stop) }); writers.Wait() }
	t.Cleanup(stopWriters)

	// Widen the handover's window: events that commit after the stream's
	// catch-up, and that the live tail has passed before the stream joins
	// it, must still reach the stream.
	var inWindow sync.Once
	e.api.SetBeforeAttach(func() {
		inWindow.Do(func() {
			orderID, _ := e.placeOrder(c.APIKey, sim.ExampleDelivered)
			for {
				ev := watcher.next(t, 30*time.Second)
				if ev.data["metadata"].(map[string]any)["correlation_id"] == orderID {
					return
				}
			}
		})
	})
	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, early)
	var got []string
	for len(got) < 600 {
		ev := s.next(t, 30*time.Second)
		require.Equal(t, c.AccountID, ev.data["metadata"].(map[string]any)["account_id"])
		got = append(got, ev.id)
	}
	stopWriters()
	all := e.settled(c.AccountID, c.APIKey)
	want := all[slices.Index(all, early)+1:]
	require.Greater(t, len(want), 600)
	for len(got) < len(want) {
		got = append(got, s.next(t, 30*time.Second).id)
	}
	require.Equal(t, want, got, "the resumed stream differs from the pull after %s", early)
	s.waitHeartbeat(t, 5*time.Second)
	require.EqualValues(t, len(want), s.received(), "an event came twice")
}

// TestIdleStreamsCostNoQueries opens 50 idle streams and counts the
// queries the process makes (connections taken from the pool, a real
// count of the store's round trips) while every stream sends two
// heartbeats: the shared live tail polls a few times a second, once for
// all of them, and asks twice a second whether any of their keys was
// revoked, once for all of them. Each stream polling by itself would make
// some 400.
func TestIdleStreamsCostNoQueries(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000, MaxStreamsPerAccount: 100}, accept.DefaultPolicy())
	var keys []string
	for range 5 {
		keys = append(keys, e.account(1_000_000).APIKey)
	}
	var streams []*sseClient
	for i := range 50 {
		streams = append(streams, openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", keys[i%len(keys)], ""))
	}
	for _, s := range streams {
		s.waitHeartbeat(t, 10*time.Second)
	}
	before, start := e.db.Pool.Stat().AcquireCount(), time.Now()
	for range 2 {
		for _, s := range streams {
			s.waitHeartbeat(t, 10*time.Second)
		}
	}
	queries, took := e.db.Pool.Stat().AcquireCount()-before, time.Since(start)
	t.Logf("50 idle streams: %d queries in %s", queries, took.Round(time.Millisecond))
	// One poll per 250 ms and one key sweep per 500 ms, for the process,
	// with room for a late tick.
	require.LessOrEqual(t, queries, int64(took/(250*time.Millisecond))+int64(took/(500*time.Millisecond))+4, "idle streams query the store by themselves")
	for _, s := range streams {
		require.Zero(t, s.received())
	}
}

// TestStreamCapPerAccount: an account may hold MaxStreamsPerAccount
// streams open at once; one more is a 429 rate_limited with Retry-After,
// other accounts are not affected, and a closed stream frees its place.
func TestStreamCapPerAccount(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000, MaxStreamsPerAccount: 2}, accept.DefaultPolicy())
	c, other := e.account(1_000_000), e.account(1_000_000)
	url := e.srv.URL + "/v1/events/stream?heartbeat=1"
	first := openStream(t, url, c.APIKey, "")
	openStream(t, url, c.APIKey, "")
	r := e.do("GET", "/v1/events/stream", c.APIKey, nil)
	requireProblem(t, r, 429, "rate_limited")
	retry, err := strconv.Atoi(r.header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After %q", r.header.Get("Retry-After"))
	require.Positive(t, retry)
	require.Contains(t, r.body["detail"], fmt.Sprint(2))
	openStream(t, url, other.APIKey, "").waitHeartbeat(t, 10*time.Second)

	first.close()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		status := streamStatus(t, url, c.APIKey)
		return status == 200, fmt.Sprintf("status %d after a stream closed", status)
	})
}

// streamStatus opens a stream, returns its status and closes it.
func streamStatus(t *testing.T, url, key string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	return res.StatusCode
}

// metric reads one unlabelled series from GET /metrics.
func (e *env) metric(name string) float64 {
	e.t.Helper()
	r := e.do("GET", "/metrics", "", nil)
	for _, line := range strings.Split(string(r.raw), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			require.NoError(e.t, err)
			return f
		}
	}
	return 0
}

// TestSlowStreamIsCut: a client that stops reading falls behind the live
// tail; once its buffer is full its stream is ended (it would resume with
// Last-Event-ID) instead of being held in memory, and a stream of the
// same account that reads keeps going.
func TestSlowStreamIsCut(t *testing.T) {
	e := newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())
	c := e.account(1_000_000_000_000)
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { conn.Close() })
	require.NoError(t, conn.(*net.TCPConn).SetReadBuffer(4096))
	_, err = fmt.Fprintf(conn, "GET /v1/events/stream?heartbeat=300 HTTP/1.1\r\nHost: afterok\r\nAuthorization: Bearer %s\r\n\r\n", c.APIKey)
	require.NoError(t, err)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		n := e.metric("afterok_event_streams_open")
		return n == 1, fmt.Sprintf("%v streams open", n)
	})
	reader := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, "")
	to := make([]string, 1000)
	for i := range to {
		to[i] = sim.ExampleDelivered
	}
	orders := 0
	// Beyond the stream's buffer (1,000 events), the connection's socket
	// buffers hold a few MiB before the server's writes block.
	storetest.Poll(t, 120*time.Second, func() (bool, string) {
		if cut := e.metric("afterok_event_streams_cut_total"); cut > 0 {
			return true, ""
		}
		r := e.do("POST", "/v1/orders", c.APIKey, order(to...))
		require.Equal(t, 202, r.status, "%s", r.raw)
		orders++
		return false, fmt.Sprintf("not cut after %d orders of 1000 messages", orders)
	})
	t.Logf("cut after %d orders of 1000 messages", orders)
	require.EqualValues(t, 1, e.metric("afterok_event_streams_cut_total"))
	require.EqualValues(t, 1, e.metric("afterok_event_streams_open"), "the reading stream was cut too")
	total := e.eventCount()
	storetest.Poll(t, 60*time.Second, func() (bool, string) {
		return reader.received() >= int64(orders*1002), fmt.Sprintf("%d of %d events", reader.received(), total)
	})
}
