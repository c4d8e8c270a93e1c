package main

import (
	"bufio"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// scrape reads the API's /metrics as series (name and labels, as the text
// format prints them) → value.
func (h *harness) scrape() map[string]float64 {
	h.t.Helper()
	res, err := http.Get("http://" + h.cfg.Addr + "/metrics")
	require.NoError(h.t, err)
	defer res.Body.Close()
	require.Equal(h.t, 200, res.StatusCode)
	out := map[string]float64{}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(h.t, err, line)
		out[line[:i]] = v
	}
	require.NoError(h.t, sc.Err())
	return out
}

// TestMetricsAfterAnEndToEndRun runs two delivered and two failed messages
// through the whole system and reads the outcome series off /metrics:
// messages by public state (from the read model), the end-to-end latency
// by outcome, delivered and failed counts by failure code; and every
// statement label of afterok_db_query_seconds is a name, not SQL.
func TestMetricsAfterAnEndToEndRun(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	order, _ := h.order(0, sim.ExampleDelivered, sim.ExampleFailover, sim.ExampleUndeliverable, sim.ExampleRejected)
	h.waitOrdersCompleted(30*time.Second, order)
	want := map[string]float64{
		`afterok_messages_delivered_total`:                                      2,
		`afterok_messages_failed_total{code="undeliverable"}`:                   1,
		`afterok_messages_failed_total{code="invalid_destination"}`:             1,
		`afterok_message_end_to_end_seconds_count{outcome="delivered"}`:         2,
		`afterok_message_end_to_end_seconds_count{outcome="failed"}`:            1 + 1,
		`afterok_message_end_to_end_seconds_bucket{outcome="failed",le="+Inf"}`: 2,
		`afterok_messages{state="delivered"}`:                                   2,
		`afterok_messages{state="failed"}`:                                      2,
		`afterok_messages{state="accepted"}`:                                    0,
		`afterok_messages{state="queued"}`:                                      0,
		`afterok_messages{state="routed"}`:                                      0,
		`afterok_messages{state="submitted"}`:                                   0,
		`afterok_messages{state="scheduled"}`:                                   0,
		`afterok_messages{state="canceled"}`:                                    0,
	}
	var got map[string]float64
	// The projector commits after the tracker completed the order, and the
	// state gauge re-reads the read model at most every 10 s.
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		got = h.scrape()
		for series, v := range want {
			if g, ok := got[series]; !ok || g != v {
				return false, fmt.Sprintf("%s = %v (present %v), want %v", series, g, ok, v)
			}
		}
		return true, ""
	})
	// Nothing beyond the bounded label sets.
	for series := range got {
		switch {
		case strings.HasPrefix(series, "afterok_messages{"):
			require.Regexp(t, `^afterok_messages\{state="(scheduled|accepted|queued|routed|submitted|delivered|failed|canceled)"\}$`, series)
		case strings.HasPrefix(series, "afterok_messages_failed_total{"):
			require.Regexp(t, `^afterok_messages_failed_total\{code="[a-z_]+"\}$`, series)
		case strings.HasPrefix(series, "afterok_message_end_to_end_seconds"):
			require.Regexp(t, `^afterok_message_end_to_end_seconds_(bucket|sum|count)\{(le="[^"]+",)?outcome="(delivered|failed)"(,le="[^"]+")?\}$`, series)
		}
	}
	// Statements are named: no SQL text, no comments, no parameters.
	name := regexp.MustCompile(`^afterok_db_query_seconds_count\{statement="([a-z0-9_.:-]+)"\}$`)
	statements := map[string]bool{}
	for series := range got {
		if strings.HasPrefix(series, "afterok_db_query_seconds_count{") {
			m := name.FindStringSubmatch(series)
			require.NotNil(t, m, "statement label is not a name: %s", series)
			statements[m[1]] = true
		}
	}
	for _, s := range []string{"append.insert_events", "append.update_streams", "tail.read", "read.streams", "authenticate"} {
		require.True(t, statements[s], "statement %s not timed; have %v", s, statements)
	}
}
