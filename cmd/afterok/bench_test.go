package main

import (
	"encoding/json"
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
	code, out, errOut := afterok(t, "bench", "--url", "http://"+h.cfg.Addr, "--key", h.key.APIKey,
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
}
