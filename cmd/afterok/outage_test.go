package main

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// The outage tests stop a dependency for 30 s in the middle of a run of a
// few thousand messages and hold the system to "an outage costs time, not
// messages": every message reaches exactly the final state its number
// promises. They own the server they stop (a throwaway PostgreSQL cluster,
// an embedded NATS), never the machine's shared ones, and their names stay
// out of the Makefile's NATS_TESTS so the external-NATS pass does not run
// them again.

// outageDown is how long the dependency stays away: 30 s, or
// AFTEROK_TEST_OUTAGE (e.g. 60s) to measure a longer outage.
func outageDown(t *testing.T) time.Duration {
	v := os.Getenv("AFTEROK_TEST_OUTAGE")
	if v == "" {
		return 30 * time.Second
	}
	d, err := time.ParseDuration(v)
	require.NoError(t, err, "AFTEROK_TEST_OUTAGE")
	return d
}

// outageRun is the load of an outage test: orders of 100 messages across
// the simulator's numbers, and one order of numbers that never get a
// receipt, in an order of their own with the validity the test gives
// (the outage tests: one that ends after the outage).
type outageRun struct {
	orders  []string
	promise map[string]string // message id → final state and code its number promises
	prices  map[string]int64  // message id → price in micros
}

const noReceiptValidity = 60 // seconds: longer than the outage, short enough for the test

func (h *harness) submitOutageLoad(orders, expiringValidity int) *outageRun {
	h.t.Helper()
	r := &outageRun{promise: map[string]string{}, prices: map[string]int64{}}
	specials := map[string]string{
		sim.ExampleUndeliverable: "failed:" + domain.CodeUndeliverable,
		sim.ExampleRejected:      "failed:" + domain.CodeInvalidDestination,
		sim.ExampleFailover:      "delivered",
		sim.ExampleEarlyReceipt:  "delivered",
	}
	submit := func(validity int, to []string, want func(string) string) {
		body := map[string]any{"to": to, "body": "outage test"}
		if validity > 0 {
			body["validity_seconds"] = validity
		}
		status, out := h.post("/v1/orders", body)
		require.Equal(h.t, 202, status, "%v", out)
		r.orders = append(r.orders, out["order_id"].(string))
		for _, m := range out["messages"].([]any) {
			mm := m.(map[string]any)
			id := mm["message_id"].(string)
			r.promise[id] = want(mm["to"].(string))
			r.prices[id] = int64(mm["price"].(map[string]any)["amount_micros"].(float64))
		}
	}
	for o := range orders {
		var to []string
		for i := range 92 {
			to = append(to, fmt.Sprintf("+491511234%04d", 1000+(o*92+i)%9000))
		}
		for n := range specials {
			to = append(to, n, n)
		}
		submit(0, to, func(n string) string {
			if w, ok := specials[n]; ok {
				return w
			}
			return "delivered"
		})
	}
	submit(expiringValidity, []string{sim.ExampleNoReceipt, sim.ExampleNoReceipt, sim.ExampleNoReceipt},
		func(string) string { return "failed:" + domain.CodeExpired })
	return r
}

// add makes r cover o's orders too.
func (r *outageRun) add(o *outageRun) {
	r.orders = append(r.orders, o.orders...)
	for id, w := range o.promise {
		r.promise[id], r.prices[id] = w, o.prices[id]
	}
}

// outcomes reads every message's final state (and failure code) from the
// store.
func (h *harness) outcomes(orders []string) map[string]string {
	h.t.Helper()
	rows, err := h.db.Pool.Query(context.Background(), `SELECT substr(stream_id, 9), type, coalesce(data->'failure'->>'code', '')
		FROM events WHERE metadata->>'correlation_id' = ANY($1) AND type IN ('MessageDelivered', 'MessageFailed')`, orders)
	require.NoError(h.t, err)
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var id, typ, code string
		require.NoError(h.t, rows.Scan(&id, &typ, &code))
		if typ == "MessageDelivered" {
			out[id] = "delivered"
		} else {
			out[id] = "failed:" + code
		}
	}
	require.NoError(h.t, rows.Err())
	return out
}

// checkPromises: every message ended as its number promises, and the
// account paid for exactly the delivered ones.
func (h *harness) checkPromises(r *outageRun) {
	h.t.Helper()
	got := h.outcomes(r.orders)
	wrong := map[string]int{}
	var charged int64
	shown := 0
	for id, want := range r.promise {
		if got[id] != want {
			wrong[fmt.Sprintf("want %s, got %q", want, got[id])]++
			if shown++; shown <= 5 {
				h.logHistory(id)
			}
		}
		if want == "delivered" {
			charged += r.prices[id]
		}
	}
	require.Empty(h.t, wrong, "messages whose final state is not the one their number promises")
	h.checkInvariants(r.orders...)
	a, err := accounts.Load(context.Background(), h.db.Pool, h.key.AccountID)
	require.NoError(h.t, err)
	require.Equal(h.t, h.credit-charged, a.Balance, "the balance is the credit less the delivered messages")
}

// waitSubmitted waits until the simulator has taken n submissions: the
// pipeline is busy, with most of the load still in flight.
func (h *harness) waitSubmitted(n int64) {
	h.t.Helper()
	storetest.Poll(h.t, 60*time.Second, func() (bool, string) {
		st := h.simStats()
		return st.Submitted >= n, fmt.Sprintf("%d submitted", st.Submitted)
	})
}

func outageHarness(t *testing.T, db *storetest.DB, n *storetest.NATS) *harness {
	h := newHarnessOn(t, db, n)
	h.credit = 1_000_000_000
	// The production delivery limit and a realistic AckWait: the outage must
	// not be ridden out by generous settings.
	h.cfg.DispatchAckWait = 30 * time.Second
	return h
}

// TestOutageOfTheDatabase stops the system's PostgreSQL for 30 s while
// about 4,000 messages are in flight, then starts it again.
func TestOutageOfTheDatabase(t *testing.T) {
	// The two outages run side by side: each owns its dependency and
	// spends most of its time waiting out the outage.
	t.Parallel()
	cluster := storetest.NewCluster(t)
	h := outageHarness(t, cluster.NewDB(t, eventstore.PoolConfig{MaxConns: 8}), storetest.NewNATS(t))
	h.start(dispatch.Hooks{})
	load := h.submitOutageLoad(40, noReceiptValidity)
	h.waitSubmitted(300)
	cluster.Stop(t)
	time.Sleep(outageDown(t)) // fault injection: the database is away
	cluster.Start(t)
	h.waitOrdersCompleted(3*time.Minute, load.orders...)
	h.checkPromises(load)
}

// TestOutageOfJetStream stops the system's NATS (an embedded server of the
// test's own, even when NATS_URL names a shared one) for 30 s while about
// 4,000 messages are in flight, then starts it again.
func TestOutageOfJetStream(t *testing.T) {
	// The two outages run side by side: each owns its dependency and
	// spends most of its time waiting out the outage.
	t.Parallel()
	n := storetest.NewEmbeddedNATS(t)
	h := outageHarness(t, storetest.NewDB(t), n)
	h.start(dispatch.Hooks{})
	load := h.submitOutageLoad(40, noReceiptValidity)
	h.waitSubmitted(300)
	n.Stop(t)
	time.Sleep(outageDown(t)) // fault injection: the broker is away
	n.Start(t)
	h.waitOrdersCompleted(3*time.Minute, load.orders...)
	h.checkPromises(load)
}

// logHistory shows a message's events with their failures, for a failing
// outage test.
func (h *harness) logHistory(id string) {
	for _, rec := range h.history(domain.MessageStream(id)) {
		h.t.Logf("%s v%d %s %s %s", id, rec.Version, rec.RecordedAt.Format("15:04:05.000"), rec.Type, string(rec.Data))
	}
}
