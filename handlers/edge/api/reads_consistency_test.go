package api_test

import (
	"context"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/provider/sim"
)

func repeat(n int, to string) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = to
	}
	return out
}

// pageThrough follows next_cursor from path until the last page, calling
// between before each next page, and returns the ids in the order seen.
func (e *readEnv) pageThrough(path, key string, between func()) []string {
	e.t.Helper()
	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		require.Less(e.t, pages, 1000, "pagination does not end")
		p := path
		if cursor != "" {
			p += "&cursor=" + url.QueryEscape(cursor)
		}
		r := e.get(p, key)
		for _, m := range r.body["messages"].([]any) {
			ids = append(ids, m.(map[string]any)["message_id"].(string))
		}
		next, ok := r.body["next_cursor"].(string)
		if !ok {
			require.Nil(e.t, r.body["next_cursor"], "next_cursor is null on the last page")
			return ids
		}
		cursor = next
		between()
	}
}

func requireEachOnce(t *testing.T, want, got []string, what string) {
	t.Helper()
	seen := map[string]int{}
	for _, id := range got {
		seen[id]++
		require.Equal(t, 1, seen[id], "%s: %s returned twice", what, id)
	}
	for _, id := range want {
		require.Equal(t, 1, seen[id], "%s: %s never returned", what, id)
	}
}

// TestCursorPaginationOverAChangingSet pages through lists while, between
// every two pages, messages change state and new orders arrive (and are
// projected): every row that was there from the start comes back exactly
// once, and no row ever twice.
func TestCursorPaginationOverAChangingSet(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	orderID, ids := e.placeOrder(c.APIKey, repeat(150, sim.ExampleDelivered)...)
	_, older := e.placeOrder(c.APIKey, repeat(20, sim.ExampleFailover)...)
	e.caughtUp()
	next := 0
	change := func() {
		for range 8 { // the next eight messages of the order move on
			if next < len(ids) {
				e.advance(ids[next], queue, route("sim-a"), submit, deliver)
				next++
			}
		}
		e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered) // newer than anything listed
		e.caughtUp()
	}

	got := e.pageThrough("/v1/orders/"+orderID+"/messages?limit=7", c.APIKey, change)
	requireEachOnce(t, ids, got, "order messages")
	require.Len(t, got, len(ids))
	for i, id := range got {
		require.Equal(t, ids[i], id, "request order")
	}

	// A filter whose matches change under the pages: rows may leave or
	// join, none comes back twice.
	got = e.pageThrough("/v1/orders/"+orderID+"/messages?limit=9&state=delivered", c.APIKey, change)
	requireEachOnce(t, nil, got, "delivered messages")

	// The support search, newest first, while newer orders keep coming.
	all := append(append([]string{}, ids...), older...)
	got = e.pageThrough("/v1/messages?limit=11", c.APIKey, change)
	requireEachOnce(t, all, got, "search")
	got = e.pageThrough("/v1/messages?limit=6&to="+url.QueryEscape(sim.ExampleFailover), c.APIKey, change)
	requireEachOnce(t, older, got, "search by number")
	require.Len(t, got, len(older))
	got = e.pageThrough("/v1/messages?limit=13&order_id="+orderID, c.APIKey, change)
	requireEachOnce(t, ids, got, "search by order")
}

// TestEventStreamResumesWithoutLoss reads the event stream while several
// writers append (one of them holding its transactions open, so commits
// land out of position order), drops the connection every few events and
// resumes with Last-Event-ID. Every event of the account arrives exactly
// once.
func TestEventStreamResumesWithoutLoss(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(1_000_000_000)
	other := e.account(1_000_000_000)
	ctx := context.Background()

	stopWriters := make(chan struct{})
	var writers sync.WaitGroup
	var stopOnce sync.Once
	stop := func() { stopOnce.Do(func() { close(stopWriters) }); writers.Wait() }
	t.Cleanup(stop)
	writerErr := make(chan error, 8)
	write := func(f func() error) {
		writers.Add(1)
		go func() {
			defer writers.Done()
			for {
				select {
				case <-stopWriters:
					return
				default:
				}
				if err := f(); err != nil {
					writerErr <- err
					return
				}
			}
		}()
	}
	for _, key := range []string{c.APIKey, c.APIKey, other.APIKey} {
		write(func() error {
			_, ids := e.placeOrder(key, sim.ExampleDelivered, sim.ExampleDelivered)
			e.advance(ids[0], queue, route("sim-a"), submit, deliver)
			return nil
		})
	}
	// The slow committer: a transaction that appends, then stays open.
	write(func() error {
		_, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered)
		return e.store.InTx(ctx, func(tx *eventstore.Tx) error {
			m := domain.Message{}
			evs, err := eventstore.ReadStream(ctx, tx, domain.MessageStream(ids[0]), 1)
			if err != nil {
				return err
			}
			for _, rec := range evs {
				ev, _ := rec.Decode()
				if err := m.Apply(ev); err != nil {
					return err
				}
			}
			q, err := m.Queue("slow", time.Now())
			if err != nil {
				return err
			}
			_, err = tx.Append(ctx, eventstore.StreamAppend{Stream: domain.MessageStream(ids[0]), Expected: eventstore.Exact(m.Version),
				Events: []eventstore.EventData{eventstore.MustEvent(q, eventstore.Metadata{AccountID: c.AccountID, CorrelationID: m.OrderID})}})
			time.Sleep(150 * time.Millisecond) // fault injection: a late commit
			return err
		})
	})

	seen := map[string]int{}
	last := "0" // from the beginning
	resumes := 0
	read := func(until func() bool) {
		for !until() {
			s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, last)
			for range 17 { // then the connection drops
				ev := s.next(t, 30*time.Second)
				seen[ev.id]++
				require.Equal(t, 1, seen[ev.id], "event %s delivered twice (resumed after %s)", ev.id, last)
				require.Equal(t, c.AccountID, ev.data["metadata"].(map[string]any)["account_id"])
				last = ev.id
				if until() {
					break
				}
			}
			s.close()
			resumes++
		}
	}
	read(func() bool { return len(seen) >= 400 })
	stop()
	select {
	case err := <-writerErr:
		t.Fatal(err)
	default:
	}
	var want []string
	rows, err := e.db.Pool.Query(ctx, `SELECT global_position FROM events WHERE account_id = $1`, c.AccountID)
	require.NoError(t, err)
	for rows.Next() {
		var p int64
		require.NoError(t, rows.Scan(&p))
		want = append(want, strconv.FormatInt(p, 10))
	}
	require.NoError(t, rows.Err())
	read(func() bool { return len(seen) >= len(want) })
	require.Len(t, seen, len(want))
	for _, p := range want {
		require.Equal(t, 1, seen[p], "event at position %s", p)
	}
	require.Greater(t, resumes, 20)

	// Idle, the stream sends heartbeats.
	s := openStream(t, e.srv.URL+"/v1/events/stream?heartbeat=1", c.APIKey, last)
	s.waitHeartbeat(t, 5*time.Second)
	require.Zero(t, s.received())
	s.close()
}

// TestTimeTravelEqualsTheReadModel records what GET /v1/messages/{id}
// showed after every step of two messages' lives, then asks for each of
// those moments with ?as_of=: the folded past must be exactly what the
// read model showed then.
func TestTimeTravelEqualsTheReadModel(t *testing.T) {
	e := newReadEnv(t)
	c := e.account(10_000_000)
	before := time.Now()
	_, ids := e.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleFailover)
	type snapshot struct {
		id   string
		at   time.Time
		body map[string]any
	}
	var snaps []snapshot
	take := func() {
		e.caughtUp()
		for _, id := range ids {
			snaps = append(snaps, snapshot{id: id, body: e.get("/v1/messages/"+id, c.APIKey).body})
		}
		now := time.Now()
		for i := len(snaps) - len(ids); i < len(snaps); i++ {
			snaps[i].at = now
		}
	}
	take()
	steps := [][2]command{
		{queue, queue},
		{route("sim-a"), route("sim-a")},
		{submit, retryWith(domain.CodeProviderUnavailable, domain.StageSubmit)},
		{deliver, queue},
		{nil, route("sim-b")},
		{nil, submit},
		{nil, retryWith(domain.CodeDeliveryDelayed, domain.StageDelivery)},
		{nil, failWith(domain.CodeExpired, domain.StageExpiry)},
	}
	for _, s := range steps {
		for i, cmd := range s {
			if cmd != nil {
				e.advance(ids[i], cmd)
			}
		}
		take()
	}
	require.Equal(t, "delivered", snaps[len(snaps)-2].body["state"])
	require.Equal(t, "failed", snaps[len(snaps)-1].body["state"])
	for i, s := range snaps {
		r := e.get("/v1/messages/"+s.id+"?as_of="+url.QueryEscape(s.at.Format(time.RFC3339Nano)), c.APIKey)
		// Echoed at the API's one precision, microseconds: the store keeps
		// no finer time, so the state at the truncated instant is the same.
		require.Equal(t, s.at.UTC().Truncate(time.Microsecond).Format("2006-01-02T15:04:05.000000Z07:00"), r.body["as_of"])
		delete(r.body, "as_of")
		require.Equal(t, s.body, r.body, "snapshot %d of %s (%s)", i, s.id, s.body["state"])
	}
	r := e.do("GET", "/v1/messages/"+ids[0]+"?as_of="+url.QueryEscape(before.Add(-time.Second).Format(time.RFC3339Nano)), c.APIKey, nil)
	requireProblem(t, r, 404, "not_found")
}
