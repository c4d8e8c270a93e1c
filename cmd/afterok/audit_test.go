package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestActionsShowActorAndReasonOnEveryReadPath runs the whole system and
// takes every action a key can: an admin credits the account, the
// account's key cancels a scheduled message, re-drives a failed one,
// issues a key and revokes it, each with a reason. Every one of them must
// name the acting key (metadata.actor) and carry its reason as a client
// sees it: in GET /v1/messages/{id}/events, in GET /v1/accounts/{id}/events
// and on the event's JetStream subject.
func TestActionsShowActorAndReasonOnEveryReadPath(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	ctx := context.Background()
	admin, err := h.running.sys.accounts.IssueKey(ctx, h.key.AccountID, []string{accounts.ScopeAdmin}, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)

	// The actions, each with its own reason.
	status, res := h.doAs(admin.APIKey, "POST", "/v1/accounts/"+h.key.AccountID+"/credits", map[string]any{"amount_micros": 5_000_000, "reason": "invoice 117 paid"})
	require.Equal(t, 201, status, "%v", res)
	status, sched := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered}, "body": "tomorrow",
		"send_at": time.Now().Add(24 * time.Hour).Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", sched)
	canceled := messageIDs(sched)[0]
	status, res = h.post("/v1/messages/"+canceled+"/cancel", map[string]any{"reason": "customer called it off"})
	require.Equal(t, 200, status, "%v", res)
	failing, failingIDs := h.order(0, sim.ExampleUndeliverable)
	h.waitOrdersCompleted(60*time.Second, failing)
	status, res = h.post("/v1/messages/"+failingIDs[0]+"/redrive", map[string]any{"reason": "the carrier's outage is over"})
	require.Equal(t, 202, status, "%v", res)
	status, issued := h.post("/v1/account/keys", map[string]any{"scopes": []string{accounts.ScopeMessagesRead}, "reason": "for the support desk"})
	require.Equal(t, 201, status, "%v", issued)
	newKey := issued["key_id"].(string)
	status, res = h.doAs(h.key.APIKey, "DELETE", "/v1/account/keys/"+newKey, map[string]any{"reason": "leaked in ticket 4411"})
	require.Equal(t, 204, status, "%v", res)

	type action struct {
		aggregate, typ, actor, reason string
		// the key revoked or issued, for the key events
		keyID string
	}
	want := []action{
		{aggregate: "account", typ: "BalanceCredited", actor: admin.KeyID, reason: "invoice 117 paid"},
		{aggregate: "message", typ: "MessageCanceled", actor: h.key.KeyID, reason: "customer called it off"},
		{aggregate: "message", typ: "MessageRedriven", actor: h.key.KeyID, reason: "the carrier's outage is over"},
		{aggregate: "account", typ: "APIKeyIssued", actor: h.key.KeyID, reason: "for the support desk", keyID: newKey},
		{aggregate: "account", typ: "APIKeyRevoked", actor: h.key.KeyID, reason: "leaked in ticket 4411", keyID: newKey},
	}
	// check requires ev (an event as the API shows it, or a JetStream
	// envelope: both carry data and metadata) to be a's, done by a.actor
	// for a.reason.
	check := func(where string, a action, data, metadata map[string]any) {
		t.Helper()
		require.Equal(t, a.actor, metadata["actor"], "%s: %s's actor", where, a.typ)
		require.Equal(t, a.reason, data["reason"], "%s: %s's reason", where, a.typ)
		if a.keyID != "" {
			require.Equal(t, a.keyID, data["key_id"], "%s: %s's key", where, a.typ)
		}
		if _, ok := data["actor"]; ok { // the message actions name it in their data too
			require.Equal(t, a.actor, data["actor"], "%s: %s's actor in its data", where, a.typ)
		}
	}

	// The message histories, as GET /v1/messages/{id}/events shows them.
	lastOf := func(messageID string) map[string]any {
		status, hist := h.get("/v1/messages/" + messageID + "/events")
		require.Equal(t, 200, status, "%v", hist)
		require.Equal(t, "valid", hist["hash_chain"])
		evs := hist["events"].([]any)
		return evs[len(evs)-1].(map[string]any)
	}
	for i, id := range []string{canceled, failingIDs[0]} {
		ev := lastOf(id)
		require.Equal(t, want[i+1].typ, ev["type"])
		check("GET /v1/messages/{id}/events", want[i+1], ev["data"].(map[string]any), ev["metadata"].(map[string]any))
	}
	// The account's history, newest first, as GET /v1/accounts/{id}/events
	// shows it.
	status, hist := h.get("/v1/accounts/" + h.key.AccountID + "/events?limit=100")
	require.Equal(t, 200, status, "%v", hist)
	for _, a := range want {
		if a.aggregate != "account" {
			continue
		}
		var found bool
		for _, e := range hist["events"].([]any) {
			ev := e.(map[string]any)
			data := ev["data"].(map[string]any)
			if ev["type"] == a.typ && (a.keyID == "" || data["key_id"] == a.keyID) {
				check("GET /v1/accounts/{id}/events", a, data, ev["metadata"].(map[string]any))
				found = true
				break // newest first: the first is the test's
			}
		}
		require.True(t, found, "GET /v1/accounts/{id}/events has no %s", a.typ)
	}

	// The JetStream subjects: the relay publishes each as its subject's
	// last message (each action here is the last of its type).
	stream, err := h.nats.JS.Stream(ctx, h.nats.Names.EventsStream())
	require.NoError(t, err)
	for _, a := range want {
		subject := h.nats.Names.EventSubject(h.key.AccountID, a.aggregate, a.typ)
		var env struct {
			eventstore.Envelope
			Data     map[string]any `json:"data"`
			Metadata map[string]any `json:"metadata"`
		}
		storetest.Poll(t, 30*time.Second, func() (bool, string) {
			msg, err := getLastMsg(ctx, stream, subject)
			if err != nil {
				return false, subject + ": " + err.Error()
			}
			env.Data, env.Metadata = nil, nil
			require.NoError(t, json.Unmarshal(msg.Data, &env))
			require.Equal(t, env.EventID.String(), msg.Header.Get(jetstream.MsgIDHeader))
			return env.Data["reason"] == a.reason, fmt.Sprintf("%s: the last message is %s", subject, msg.Data)
		})
		require.Equal(t, a.typ, env.Type)
		check("JetStream "+subject, a, env.Data, env.Metadata)
	}

	// The store agrees (the CLI's replay reads it).
	recs := h.history(domain.MessageStream(canceled))
	require.Equal(t, "Accepted,Canceled", types(recs))
}

// doAs sends a request with key and returns its status and JSON body.
func (h *harness) doAs(key, method, path string, body any) (int, map[string]any) {
	h.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(method, "http://"+h.cfg.Addr+path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}
