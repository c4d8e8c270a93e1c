package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
)

// The cluster tests' checks that the two processes share the partitioned
// work, each partition with exactly one owner at a time (cluster_test.go
// says which check catches which failure).

// callbackReceiver is the webhook endpoint of the cluster tests' account,
// subscribed to every order and message event: the webhooks fan-out, a
// partitioned tail consumer, runs in both processes and sends to it.
type callbackReceiver struct {
	url    string
	secret string

	mu  sync.Mutex
	got map[string]*callbackSeen // by webhook-id
}

// callbackSeen is what arrived under one webhook-id.
type callbackSeen struct {
	requests int
	events   map[string]bool // the event ids their bodies named
	bad      []string        // why a request was not a valid callback
}

func newCallbackReceiver(c *clusterHarness) *callbackReceiver {
	r := &callbackReceiver{got: map[string]*callbackSeen{}}
	srv := httptest.NewServer(http.HandlerFunc(r.serve))
	c.t.Cleanup(srv.Close)
	r.url = srv.URL + "/afterok"
	return r
}

func (r *callbackReceiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	id := req.Header.Get("webhook-id")
	var p struct {
		Data struct {
			EventID string `json:"event_id"`
		} `json:"data"`
	}
	var bad string
	r.mu.Lock()
	secret := r.secret
	r.mu.Unlock()
	if wh, err := standardwebhooks.NewWebhook(secret); err != nil {
		bad = "secret: " + err.Error()
	} else if err := wh.Verify(body, req.Header); err != nil {
		bad = "signature: " + err.Error()
	} else if err := json.Unmarshal(body, &p); err != nil || p.Data.EventID == "" {
		bad = fmt.Sprintf("body without an event id: %v", err)
	}
	r.mu.Lock()
	s := r.got[id]
	if s == nil {
		s = &callbackSeen{events: map[string]bool{}}
		r.got[id] = s
	}
	s.requests++
	if p.Data.EventID != "" {
		s.events[p.Data.EventID] = true
	}
	if bad != "" {
		s.bad = append(s.bad, bad)
	}
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// registerReceiver subscribes the receiver to every order and message
// event of the account (the default event types).
func (c *clusterHarness) registerReceiver() {
	c.t.Helper()
	c.hooks = newCallbackReceiver(c)
	status, out := c.post("/v1/webhooks", map[string]any{"url": c.hooks.url})
	require.Equal(c.t, 201, status, "%v", out)
	c.hooks.mu.Lock()
	c.hooks.secret, _ = out["secret"].(string)
	c.hooks.mu.Unlock()
	require.NotEmpty(c.t, c.hooks.secret)
}

// checkCallbacks: every event the account's endpoint is owed (every order
// and message event of the account) reached the receiver, signed with its
// secret, under its own event id as webhook-id and under no other. With
// exactlyOnce, each also came once only: nothing failed in the run, so a
// second request for an event means two processes fanned out or sent the
// same partition's events. Without it (a process was killed mid-send,
// which at-least-once delivery repeats), a repeat is allowed, with the
// same webhook-id.
func (c *clusterHarness) checkCallbacks(timeout time.Duration, exactlyOnce bool) {
	t := c.t
	t.Helper()
	owed := eventIDsOf(t, c.db, c.key.AccountID, domain.WebhookEventTypes())
	require.NotEmpty(t, owed)
	storetest.Poll(t, timeout, func() (bool, string) {
		c.hooks.mu.Lock()
		defer c.hooks.mu.Unlock()
		missing := 0
		for id := range owed {
			if c.hooks.got[id] == nil {
				missing++
			}
		}
		return missing == 0, fmt.Sprintf("%d of %d owed callbacks not received", missing, len(owed))
	})
	c.hooks.mu.Lock()
	defer c.hooks.mu.Unlock()
	repeated := 0
	for id, s := range c.hooks.got {
		require.True(t, owed[id], "a callback for %s, which the endpoint is not owed", id)
		require.Empty(t, s.bad, "callbacks under webhook-id %s", id)
		require.Equal(t, map[string]bool{id: true}, s.events, "the webhook-id is the event id, one event each")
		if s.requests > 1 {
			repeated++
			require.False(t, exactlyOnce, "the callback of %s came %d times", id, s.requests)
		}
	}
	c.step(fmt.Sprintf("%d callbacks received, signed, one webhook-id each, %d of them more than once", len(owed), repeated))
}

// checkShared: every partitioned consumer's partitions each have one
// owner with a live lease, and both processes own some of every
// consumer's: the work is shared, and no partition is left to none.
func (c *clusterHarness) checkShared(timeout time.Duration) {
	c.t.Helper()
	want := map[string]bool{}
	for _, p := range c.procs {
		want[strconv.Itoa(p.cmd.Process.Pid)] = true
	}
	var consumers []string
	storetest.Poll(c.t, timeout, func() (bool, string) {
		rows, err := c.db.Pool.Query(context.Background(), `SELECT consumer,
			count(*) FILTER (WHERE owner IS NULL OR lease_until <= clock_timestamp()),
			array_agg(DISTINCT split_part(owner, '/', 2)) FILTER (WHERE lease_until > clock_timestamp())
			FROM consumer_partitions GROUP BY consumer ORDER BY consumer`)
		require.NoError(c.t, err)
		defer rows.Close()
		consumers = consumers[:0]
		var wrong []string
		for rows.Next() {
			var name string
			var unowned int
			var owners []string
			require.NoError(c.t, rows.Scan(&name, &unowned, &owners))
			consumers = append(consumers, name)
			held := map[string]bool{}
			for _, o := range owners {
				held[o] = true
			}
			if unowned > 0 || len(held) != len(want) {
				wrong = append(wrong, fmt.Sprintf("%s: %d partitions without a live owner, owners %v", name, unowned, owners))
			}
			for pid := range held {
				if !want[pid] {
					wrong = append(wrong, fmt.Sprintf("%s: owned by pid %s, not one of the processes", name, pid))
				}
			}
		}
		require.NoError(c.t, rows.Err())
		if len(consumers) == 0 {
			return false, "no consumer has partitions yet"
		}
		return len(wrong) == 0, strings.Join(wrong, "; ")
	})
	sort.Strings(consumers)
	// The fan-out is one of them: the callbacks are shared work too.
	require.True(c.t, slices.Contains(consumers, "webhooks"), "no webhooks consumer among %v", consumers)
	c.step(fmt.Sprintf("both processes own partitions of every consumer: %s", strings.Join(consumers, ", ")))
}
