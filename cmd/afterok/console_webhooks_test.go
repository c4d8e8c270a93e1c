package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestConsoleShowsWebhookAttemptsAndReplays is support answering "did the
// client get told?": the webhooks page lists the endpoint, its page shows
// the delivery attempts (the receiver's first answer was a 500, then a
// 200), and Replay sends the events again, which the receiver gets.
func TestConsoleShowsWebhookAttemptsAndReplays(t *testing.T) {
	h := newHarness(t)
	h.cfg.WebhookAllowPrivate = true
	h.cfg.WebhookRetrySchedule = []time.Duration{200 * time.Millisecond, 400 * time.Millisecond}
	var received atomic.Int64
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if received.Add(1) == 1 {
			http.Error(w, "not yet", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	h.start(dispatch.Hooks{})
	status, out := h.post("/v1/webhooks", map[string]any{"url": rc.URL + "/hook", "event_types": []string{"MessageDelivered"},
		"description": "the client's delivery reports"})
	require.Equal(t, 201, status, "%v", out)
	id := out["webhook_id"].(string)
	orderID, _ := h.order(0, sim.ExampleDelivered)
	h.waitOrdersCompleted(60*time.Second, orderID)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		a := h.getJSON("/v1/webhooks/" + id + "/attempts?outcome=succeeded")
		n := len(a["attempts"].([]any))
		return n == 1, fmt.Sprintf("%d succeeded attempts, the receiver got %d requests", n, received.Load())
	})

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.open("/console/webhooks")
	b.signIn(h.key.APIKey)
	b.waitText("main", rc.URL+"/hook")
	b.open("/console/webhooks/" + id)
	b.waitText("main", "the client's delivery reports")
	// The attempts table: the 500 that failed, then the success.
	b.waitText("tbody", "succeeded")
	rows := b.text("tbody")
	require.Contains(t, rows, "failed")
	require.Contains(t, rows, "500")
	require.Contains(t, rows, "MessageDelivered")
	b.shoot("webhook", 1280, 900)

	before := received.Load()
	b.click("form.asof button[type=submit]")
	b.waitText("[role=status]", "queued")
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return received.Load() > before, fmt.Sprintf("the receiver got %d requests, %d before the replay", received.Load(), before)
	})
	b.checkClean(h.key.APIKey)
	require.False(t, strings.Contains(b.text("main"), h.key.APIKey))
}
