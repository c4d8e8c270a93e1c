package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/workers/callbacks"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

func webhookTypes() []string { return domain.WebhookEventTypes() }

// TestWebhooksEndToEnd runs the whole system (API, JetStream, workers,
// simulator, tracker, the webhooks role) with an endpoint subscribed to
// the final states and order completion, and a receiver that answers 500
// for its first second: every final state of the simulator's test numbers
// and both orders' completion reach it, signed (checked with the Standard
// Webhooks reference library), nothing it did not subscribe to, each
// stream in version order, the early failures retried on the schedule.
func TestWebhooksEndToEnd(t *testing.T) {
	h := newHarness(t)
	h.cfg.WebhookAllowPrivate = true
	h.cfg.WebhookRetrySchedule = []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		time.Second, time.Second, time.Second, time.Second}
	opened := time.Now()
	type got struct {
		id     string
		body   []byte
		header http.Header
		status int
	}
	var mu sync.Mutex
	var all []got
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		status := 200
		if time.Since(opened) < time.Second {
			status = 500
		}
		mu.Lock()
		all = append(all, got{id: r.Header.Get("webhook-id"), body: b, header: r.Header.Clone(), status: status})
		mu.Unlock()
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	h.start(dispatch.Hooks{})
	subscribed := []string{"MessageDelivered", "MessageFailed", "OrderCompleted"}
	status, out := h.post("/v1/webhooks", map[string]any{"url": rc.URL + "/afterok", "event_types": subscribed})
	require.Equal(t, 201, status, "%v", out)
	secret, webhookID := out["secret"].(string), out["webhook_id"].(string)
	opened = time.Now()

	h.checkEveryTestNumber(60 * time.Second)

	// What the store says the endpoint is owed: every subscribed event of
	// the account.
	want := eventIDsOf(t, h.db, h.key.AccountID, subscribed)
	require.Len(t, want, 6+2, "six final states and two completed orders")
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		ok := map[string]bool{}
		for _, g := range all {
			if g.status == 200 {
				ok[g.id] = true
			}
		}
		return len(ok) == len(want), "waiting for every subscribed event"
	})
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	versions := map[string]int{}
	failed := 0
	for _, g := range all {
		require.True(t, want[g.id], "%s was not subscribed", g.id)
		require.NoError(t, wh.Verify(g.body, g.header), "signature of %s", g.id)
		var p struct {
			Type string `json:"type"`
			Data struct {
				StreamID string `json:"stream_id"`
				Version  int    `json:"version"`
				EventID  string `json:"event_id"`
			} `json:"data"`
		}
		require.NoError(t, json.Unmarshal(g.body, &p))
		require.Contains(t, subscribed, p.Type)
		require.Equal(t, g.id, p.Data.EventID)
		require.GreaterOrEqual(t, p.Data.Version, versions[p.Data.StreamID], "stream %s out of order", p.Data.StreamID)
		versions[p.Data.StreamID] = p.Data.Version
		if g.status != 200 {
			failed++
		}
	}
	// The attempts endpoint tells support what happened, failures included.
	// The log row of an attempt is written after its answer came (by a
	// recorder, in a batch), so it is read until the last one is in.
	type attempt struct {
		Outcome    string `json:"outcome"`
		StatusCode *int   `json:"status_code"`
	}
	var attempts []attempt
	outcomes := map[string]int{}
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		req, _ := http.NewRequest("GET", "http://"+h.cfg.Addr+"/v1/webhooks/"+webhookID+"/attempts?limit=500", nil)
		req.Header.Set("Authorization", "Bearer "+h.key.APIKey)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err.Error()
		}
		defer res.Body.Close()
		var page struct {
			Attempts []attempt `json:"attempts"`
		}
		if err := json.NewDecoder(res.Body).Decode(&page); err != nil {
			return false, err.Error()
		}
		attempts, outcomes = page.Attempts, map[string]int{}
		for _, a := range attempts {
			outcomes[a.Outcome]++
		}
		return outcomes["succeeded"] == len(want) && outcomes["failed"] == failed, fmt.Sprintf("the attempt log has %v; the receiver answered %d with 200 and %d otherwise", outcomes, len(want), failed)
	})
	for _, a := range attempts {
		if a.Outcome == "failed" {
			require.Equal(t, 500, *a.StatusCode)
		}
	}
	require.Equal(t, len(want), outcomes["succeeded"])
	require.Equal(t, failed, outcomes["failed"], "every failed request is in the log")
}

// TestWebhooksCrashBetweenDeliveryAndRecord kills the webhooks role after
// its first callbacks were answered and before any was recorded (the rest
// of the system stops with it), while orders are in flight; after a
// restart every subscribed event reaches the receiver, the ones sent
// before the crash again with the same webhook-id, and the orders
// complete as ever.
func TestWebhooksCrashBetweenDeliveryAndRecord(t *testing.T) {
	h := newHarness(t)
	h.cfg.WebhookAllowPrivate = true
	h.cfg.WebhookLease = 2 * time.Second
	var mu sync.Mutex
	calls := map[string]int{}
	rc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.Header.Get("webhook-id")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(rc.Close)
	fired := false
	h.webhookHooks = callbacks.Hooks{Abandon: true, BeforeRecord: func(ctx context.Context) {
		mu.Lock()
		first := !fired
		fired = true
		mu.Unlock()
		if first {
			h.running.cancel()
		}
		<-ctx.Done()
	}}
	h.start(dispatch.Hooks{})
	status, out := h.post("/v1/webhooks", map[string]any{"url": rc.URL})
	require.Equal(t, 201, status, "%v", out)
	orders := faultOrder(h)
	h.waitStopped()
	require.True(t, fired, "the crash point was reached")
	var logged int
	require.NoError(t, h.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_attempts`).Scan(&logged))
	require.Zero(t, logged, "killed before any record")
	mu.Lock()
	before := map[string]int{}
	for id, n := range calls {
		before[id] = n
	}
	mu.Unlock()
	require.NotEmpty(t, before, "callbacks were answered before the crash")

	h.webhookHooks = callbacks.Hooks{}
	h.start(dispatch.Hooks{})
	h.waitOrdersCompleted(60*time.Second, orders...)
	h.checkInvariants(orders...)
	want := map[string]bool{}
	rows, err := h.db.Pool.Query(context.Background(), `SELECT event_id::text FROM events WHERE account_id = $1 AND type = ANY($2)`,
		h.key.AccountID, webhookTypes())
	require.NoError(t, err)
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		want[id] = true
	}
	require.NoError(t, rows.Err())
	storetest.Poll(t, 60*time.Second, func() (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= len(want), fmt.Sprintf("%d of %d events delivered", len(calls), len(want))
	})
	mu.Lock()
	defer mu.Unlock()
	for id := range calls {
		require.True(t, want[id], "%s is not one of the account's events", id)
	}
	again := 0
	for id := range before {
		if calls[id] > before[id] {
			again++
		}
	}
	require.Positive(t, again, "what was sent and not recorded was sent again, with the same webhook-id")
}

// eventIDsOf returns the ids of an account's stored events of the given
// types: what the account's webhook endpoints are owed.
func eventIDsOf(t *testing.T, db *storetest.DB, account string, types []string) map[string]bool {
	t.Helper()
	rows, err := db.Pool.Query(context.Background(), `SELECT event_id::text FROM events WHERE account_id = $1 AND type = ANY($2)`,
		account, types)
	require.NoError(t, err)
	ids := map[string]bool{}
	for rows.Next() {
		var id string
		require.NoError(t, rows.Scan(&id))
		ids[id] = true
	}
	require.NoError(t, rows.Err())
	return ids
}
