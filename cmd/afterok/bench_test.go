package main

import (
	"encoding/json"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestBenchAgainstARunningSystem runs `afterok bench` against a whole
// system: every message reaches a final state, the report adds up, and
// --rate paces what is offered.
func TestBenchAgainstARunningSystem(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	t.Setenv("DATABASE_URL", h.db.URL)
	const messages, rate = 300, 600.0
	start := time.Now()
	code, out, errOut := afterok(t, "bench", "--url", "http://"+h.cfg.Addr, "--sim-url", "http://"+h.cfg.SimAddr, "--key", h.key.APIKey,
		"--messages", "300", "--order-size", "50", "--clients", "3", "--rate", "600", "--timeout", "60s", "--json")
	require.Equal(t, 0, code, errOut)
	var r benchReport
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	require.Equal(t, messages, r.Final, "every message reached a final state")
	require.Equal(t, 6, r.Orders)
	require.Zero(t, r.RefusedOrders)
	require.Equal(t, rate, r.OfferedRate)
	// 300 messages at 600/s with a burst of one order (50): the last order
	// cannot go out before (300-50)/600 s.
	require.GreaterOrEqual(t, r.AcceptSeconds, 0.4, "paced")
	require.GreaterOrEqual(t, time.Since(start).Seconds(), 0.4)
	require.LessOrEqual(t, r.AcceptP50, r.AcceptP99)
	require.Positive(t, r.EndToEndPerSecond)
	// Per message, from its order's POST to its final event: at least the
	// simulator's receipt delay.
	require.Positive(t, r.EndToEndP50)
	require.LessOrEqual(t, r.EndToEndP50, r.EndToEndP99)
	require.Zero(t, r.Sustained60s, "a run under 60 s has no sustained rate")
	require.Positive(t, r.SustainedSeconds)
	require.NotNil(t, r.DuplicateSubmissions, "the simulator's counter was read")
	require.Zero(t, *r.DuplicateSubmissions)
	// The system runs inside this test process, simulator included.
	require.NotEmpty(t, r.CPU)
	require.Equal(t, "afterok", r.CPU[0].Name)
	require.Equal(t, os.Getpid(), r.CPU[0].PID)
	require.Positive(t, r.CPU[0].Seconds)
	require.Contains(t, r.CPUNotes, "the simulator runs inside the afterok process (its CPU is in afterok's)")
}

func TestSustainedIsTheBestMinute(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	var times []time.Time
	// 10/s for 30 s, 100/s for 60 s, 10/s for 30 s.
	for i := range 300 {
		times = append(times, t0.Add(time.Duration(i)*100*time.Millisecond))
	}
	for i := range 6000 {
		times = append(times, t0.Add(30*time.Second+time.Duration(i)*10*time.Millisecond))
	}
	for i := range 300 {
		times = append(times, t0.Add(90*time.Second+time.Duration(i)*100*time.Millisecond))
	}
	rate, span := sustained(times, time.Minute)
	require.InDelta(t, 100, rate, 0.5)
	require.InDelta(t, 120, span, 0.2)
	rate, span = sustained(times[:500], time.Minute)
	require.Zero(t, rate)
	require.InDelta(t, 32, span, 0.1)
}

// TestBenchWithAWebhookReceiver: with --webhook-receiver the bench
// registers a receiver for every event of its account and reports every
// callback, signed, with its lag.
func TestBenchWithAWebhookReceiver(t *testing.T) {
	h := newHarness(t)
	h.cfg.WebhookAllowPrivate = true
	h.start(dispatch.Hooks{})
	code, out, errOut := afterok(t, "bench", "--url", "http://"+h.cfg.Addr, "--sim-url", "http://"+h.cfg.SimAddr, "--key", h.key.APIKey,
		"--messages", "100", "--order-size", "50", "--clients", "2", "--timeout", "60s", "--json", "--webhook-receiver", "127.0.0.1:0")
	require.Equal(t, 0, code, errOut)
	var r benchReport
	require.NoError(t, json.Unmarshal([]byte(out), &r), out)
	require.Equal(t, 100, r.Final)
	require.NotNil(t, r.Webhooks, out)
	// Five events per message (accepted, queued, routed, submitted,
	// delivered) and two per order (accepted, completed).
	require.Equal(t, 100*5+2*2, r.Webhooks.Callbacks, out)
	require.Zero(t, r.Webhooks.BadSigs)
	require.Positive(t, r.Webhooks.LagP50)
	require.LessOrEqual(t, r.Webhooks.LagP50, r.Webhooks.LagP99)
	require.Positive(t, r.Webhooks.PerSecond)
}
