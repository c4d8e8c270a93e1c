package main

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// crashOnce returns a hook that, the first time it runs, kills the system
// (cancels its context) and blocks the batch until the kill took effect,
// so nothing after the hook point runs: a crash at exactly that point.
func (h *harness) crashOnce(fired *bool, mu *sync.Mutex) func(ctx context.Context) {
	return func(ctx context.Context) {
		mu.Lock()
		first := !*fired
		*fired = true
		mu.Unlock()
		if !first {
			return
		}
		h.running.cancel()
		<-ctx.Done()
	}
}

func faultOrder(h *harness) []string {
	var orders []string
	for range 3 {
		o, _ := h.order(0, sim.ExampleDelivered, sim.ExampleFailover, sim.ExampleEarlyReceipt,
			sim.ExampleUndeliverable, "+4915112345679", "+4915112345680")
		orders = append(orders, o)
	}
	return orders
}

// TestCrashBetweenRoutedAndSubmitted kills the worker after MessageRouted
// is committed and before the provider is called; after a restart every
// message still reaches exactly one final state and nothing is sent twice.
func TestCrashBetweenRoutedAndSubmitted(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	fired := false
	h.start(dispatch.Hooks{AfterRouted: h.crashOnce(&fired, &mu)})
	orders := faultOrder(h)
	h.waitStopped()
	require.True(t, fired, "the crash point was reached")
	h.start(dispatch.Hooks{})
	h.waitOrdersCompleted(60*time.Second, orders...)
	h.checkInvariants(orders...)
}

// TestCrashBetweenSubmitAndItsEvent kills the worker after the provider
// accepted the attempts and before MessageSubmitted is committed: the
// redelivered jobs resubmit the same attempts with the same idempotency
// keys, and the simulator answers from its record instead of sending again.
func TestCrashBetweenSubmitAndItsEvent(t *testing.T) {
	h := newHarness(t)
	var mu sync.Mutex
	fired := false
	h.start(dispatch.Hooks{AfterSubmit: h.crashOnce(&fired, &mu)})
	orders := faultOrder(h)
	h.waitStopped()
	require.True(t, fired)
	h.start(dispatch.Hooks{})
	h.waitOrdersCompleted(60*time.Second, orders...)
	h.checkInvariants(orders...)
	require.Positive(t, h.sim.Stats().IdempotentReplays, "the resubmissions were answered from the provider's record")
}

// TestNATSRestartMidRun restarts JetStream while orders are in flight.
func TestNATSRestartMidRun(t *testing.T) {
	h := newHarness(t)
	if h.nats.Embedded == nil {
		t.Skip("restarting NATS needs the embedded server; NATS_URL is set")
	}
	h.start(dispatch.Hooks{})
	orders := faultOrder(h)
	h.nats.Restart(t, 500*time.Millisecond)
	orders = append(orders, faultOrder(h)...)
	h.waitOrdersCompleted(90*time.Second, orders...)
	h.checkInvariants(orders...)
}

// TestPostgresConnectionsDroppedMidRun terminates every connection of the
// system's database while orders are in flight.
func TestPostgresConnectionsDroppedMidRun(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	orders := faultOrder(h)
	_, err := h.db.Pool.Exec(context.Background(), `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	require.NoError(t, err)
	orders = append(orders, faultOrder(h)...)
	h.waitOrdersCompleted(90*time.Second, orders...)
	h.checkInvariants(orders...)
}
