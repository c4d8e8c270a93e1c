package eventstore_test

// Fault tests: the relay is killed between acks and checkpoint, the stream
// disappears or refuses an event, NATS restarts, PostgreSQL connections are
// killed. After each, the stream must hold every event once, in tail order.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestRelayCrashBetweenAckAndCheckpoint kills the relay after the stream
// acknowledged every event and before the checkpoint says so. The next
// relay publishes them again; the stream keeps each once (Nats-Msg-Id), and
// what is appended afterwards follows in order.
func TestRelayCrashBetweenAckAndCheckpoint(t *testing.T) {
	ctx := context.Background()
	g := newRelayRig(t)
	for i := range 60 {
		_, err := g.store.Append(ctx, fmt.Sprintf("order-%d", i%7), eventstore.Any, ev("OrderAccepted", i), ev("BalanceReserved", i))
		require.NoError(t, err)
	}
	tail := g.tail()
	last := tail[len(tail)-1].Cursor()

	// The hook runs after the acks, before the checkpoint write. When
	// everything is acknowledged the process dies there: no further write
	// of any kind (a graceful stop would write the checkpoint).
	errCrash := errors.New("killed")
	ctxCrash, crash := context.WithCancel(ctx)
	defer crash()
	cfg := eventstore.WithBeforeCheckpoint(g.config(prometheus.NewRegistry()), func(to eventstore.Cursor) error {
		if to != last {
			return nil
		}
		crash()
		return errCrash
	})
	r1, err := eventstore.NewRelay(cfg)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- r1.Run(ctxCrash) }()
	select {
	case err := <-done:
		require.ErrorIs(t, err, errCrash)
	case <-time.After(30 * time.Second):
		t.Fatal("the relay never acknowledged everything")
	}
	require.Equal(t, uint64(len(tail)), g.streamCount(), "everything was acknowledged before the crash")
	cp, err := eventstore.Checkpoint(ctx, g.db.Pool, "relay")
	require.NoError(t, err)
	require.NotEqual(t, last, cp, "the crash came before the last checkpoint")
	unchecked := 0
	for _, e := range tail {
		if cp.Less(e.Cursor()) {
			unchecked++
		}
	}

	reg := prometheus.NewRegistry()
	g.start(g.config(reg))
	g.waitCheckpoint("relay", tail, 30*time.Second)
	require.Equal(t, float64(unchecked), metric(t, reg, "afterok_relay_events_published_total", "result", "duplicate"),
		"the restarted relay must publish again what the checkpoint did not cover")
	require.Zero(t, metric(t, reg, "afterok_relay_events_published_total", "result", "stored"))
	g.requireStreamIsTail(tail)

	for i := range 20 {
		_, err := g.store.Append(ctx, fmt.Sprintf("order-%d", i%7), eventstore.Any, ev("OrderCompleted", i))
		require.NoError(t, err)
	}
	tail = g.tail()
	require.NotEqual(t, last, tail[len(tail)-1].Cursor())
	g.waitCheckpoint("relay", tail, 30*time.Second)
	g.requireStreamIsTail(tail)
	require.Equal(t, 20.0, metric(t, reg, "afterok_relay_events_published_total", "result", "stored"))
	require.Zero(t, sumPublishErrors(t, reg))
}

// TestRelayHoldsCheckpointWithoutAcks deletes the events stream under a
// running relay: no publish is acknowledged, so the checkpoint must stay
// where it was while the lag grows, and everything must follow once the
// stream is back.
func TestRelayHoldsCheckpointWithoutAcks(t *testing.T) {
	ctx := context.Background()
	var now atomic.Pointer[time.Time]
	t0 := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	now.Store(&t0)
	g := newRelayRig(t, eventstore.WithClock(func() time.Time { return *now.Load() }))
	for i := range 10 {
		_, err := g.store.Append(ctx, "order-1", eventstore.Any, ev("OrderAccepted", i))
		require.NoError(t, err)
	}
	reg := prometheus.NewRegistry()
	relay := g.start(g.config(reg))
	before := g.tail()
	g.waitCheckpoint("relay", before, 30*time.Second)
	require.NoError(t, g.nats.JS.DeleteStream(ctx, g.nats.Names.EventsStream()))

	t1 := t0.Add(90 * time.Second)
	now.Store(&t1)
	for i := range 25 {
		_, err := g.store.Append(ctx, "order-1", eventstore.Any, ev("MessageQueued", i))
		require.NoError(t, err)
	}
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return metric(t, reg, "afterok_relay_publish_errors_total", "reason", "no_stream") >= 2, "the relay must keep trying"
	})
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		lag := relay.Lag()
		return lag.Events == 25 && lag.Behind == 90*time.Second, fmt.Sprintf("lag: %+v", relay.Lag())
	})
	require.Equal(t, 25.0, metric(t, reg, "afterok_relay_lag_events"))
	require.Equal(t, 90.0, metric(t, reg, "afterok_relay_lag_seconds"))
	cp, err := eventstore.Checkpoint(ctx, g.db.Pool, "relay")
	require.NoError(t, err)
	require.Equal(t, before[len(before)-1].Cursor(), cp, "the checkpoint moved past unacknowledged events")

	require.NoError(t, bus.EnsureStreams(ctx, g.nats.JS, g.nats.Names, bus.StreamConfig{}))
	tail := g.tail()
	g.waitCheckpoint("relay", tail, 30*time.Second)
	g.requireStreamIsTail(tail[len(before):]) // the new stream holds what came after
	storetest.Poll(t, 10*time.Second, func() (bool, string) { return relay.Lag().Events == 0, fmt.Sprintf("lag: %+v", relay.Lag()) })
}

// TestRelayKeepsOrderWhenTheStreamRefusesAnEvent makes the stream refuse
// one event (too large) while it accepts the ones after it. The relay must
// neither skip the refused event nor let the later ones into the stream
// ahead of it: once the stream accepts it, everything follows in order.
func TestRelayKeepsOrderWhenTheStreamRefusesAnEvent(t *testing.T) {
	ctx := context.Background()
	g := newRelayRig(t)
	setMaxMsgSize := func(n int32) {
		st, err := g.nats.JS.Stream(ctx, g.nats.Names.EventsStream())
		require.NoError(t, err)
		cfg := st.CachedInfo().Config
		cfg.MaxMsgSize = n
		_, err = g.nats.JS.UpdateStream(ctx, cfg)
		require.NoError(t, err)
	}
	setMaxMsgSize(4096)
	for i := range 5 {
		_, err := g.store.Append(ctx, "order-1", eventstore.Any, ev("Small", i))
		require.NoError(t, err)
	}
	big := ev("Big", 0)
	big.Data = []byte(`{"pad":"` + strings.Repeat("x", 8000) + `"}`)
	_, err := g.store.Append(ctx, "order-1", eventstore.Any, big)
	require.NoError(t, err)
	for i := range 5 {
		_, err := g.store.Append(ctx, "order-2", eventstore.Any, ev("Small", i))
		require.NoError(t, err)
	}
	tail := g.tail()
	reg := prometheus.NewRegistry()
	g.start(g.config(reg))
	g.waitCheckpoint("relay", tail[:5], 30*time.Second)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return metric(t, reg, "afterok_relay_publish_errors_total", "reason", "rejected") >= 2, "the relay must keep trying the refused event"
	})
	cp, err := eventstore.Checkpoint(ctx, g.db.Pool, "relay")
	require.NoError(t, err)
	require.Equal(t, tail[4].Cursor(), cp, "the checkpoint must stop before the refused event")

	setMaxMsgSize(-1)
	g.waitCheckpoint("relay", tail, 30*time.Second)
	g.requireStreamIsTail(tail)
}

// TestRelayRidesOutNATSRestart restarts the NATS server twice while
// appenders keep writing.
func TestRelayRidesOutNATSRestart(t *testing.T) {
	g := newRelayRig(t)
	if g.nats.Embedded == nil {
		t.Skip("restarting NATS needs the embedded server (NATS_URL is set)")
	}
	reg := prometheus.NewRegistry()
	cfg := g.config(reg)
	cfg.MaxInFlight = 64
	g.start(cfg)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() { appendEvents(t, g.store, w, stop, 100_000, nil) })
	}
	seen := uint64(0)
	for range 2 {
		storetest.Poll(t, 30*time.Second, func() (bool, string) {
			return g.streamCount() >= seen+300, fmt.Sprintf("%d relayed, want %d", g.streamCount(), seen+300)
		})
		g.nats.Restart(t, 300*time.Millisecond)
		storetest.Poll(t, 30*time.Second, func() (bool, string) {
			seen = g.streamCount()
			return seen > 0, "the stream is back"
		})
	}
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return g.streamCount() >= seen+300, "nothing relayed after the restart"
	})
	close(stop)
	wg.Wait()
	tail := g.tail()
	g.waitCheckpoint("relay", tail, 60*time.Second)
	g.requireStreamIsTail(tail)
	t.Logf("%d events; publish errors: %v; duplicates: %v", len(tail), sumPublishErrors(t, reg),
		metric(t, reg, "afterok_relay_events_published_total", "result", "duplicate"))
}

// TestRelayRecoversFromKilledConnections terminates every connection to
// the test database, three times, while the relay runs and appenders write.
func TestRelayRecoversFromKilledConnections(t *testing.T) {
	ctx := context.Background()
	g := newRelayRig(t)
	reg := prometheus.NewRegistry()
	g.start(g.config(reg))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Go(func() { appendEvents(t, g.store, w, stop, 100_000, nil) })
	}
	killer, err := pgx.Connect(ctx, g.db.URL)
	require.NoError(t, err)
	defer killer.Close(ctx)
	seen := uint64(0)
	for range 3 {
		storetest.Poll(t, 30*time.Second, func() (bool, string) {
			return g.streamCount() >= seen+200, fmt.Sprintf("%d relayed, want %d", g.streamCount(), seen+200)
		})
		var killed int
		require.NoError(t, killer.QueryRow(ctx, `SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
			WHERE datname = current_database() AND pid <> pg_backend_pid()) k`).Scan(&killed))
		require.NotZero(t, killed, "no connection to kill")
		seen = g.streamCount()
	}
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return g.streamCount() >= seen+200, "nothing relayed after the connections were killed"
	})
	close(stop)
	wg.Wait()
	tail := g.tail()
	g.waitCheckpoint("relay", tail, 60*time.Second)
	g.requireStreamIsTail(tail)
	t.Logf("%d events; store errors: read %v, checkpoint %v", len(tail),
		metric(t, reg, "afterok_relay_store_errors_total", "op", "read"), metric(t, reg, "afterok_relay_store_errors_total", "op", "checkpoint"))
}
