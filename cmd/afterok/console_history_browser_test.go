package main

import (
	"context"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// The message page as an auditor reads it: the state at a past moment,
// who took each action, and whether the record still holds.

// TestConsoleShowsAMessageAsOfAMoment: a failover message routes twice.
// As of a moment between the two routings, its page shows the first route
// decision (not the last of its history), greys out the events recorded
// later, and offers no action (a past state is not something to act on).
// The viewer is in India (UTC+5:30, no daylight saving), so the times
// read in that zone with UTC on hover, and the moment typed in local time
// reaches the API as the same instant.
func TestConsoleShowsAMessageAsOfAMoment(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	orderID, ids := h.order(0, sim.ExampleFailover)
	id := ids[0]
	h.waitOrdersCompleted(60*time.Second, orderID)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the store
		m := h.getJSON("/v1/messages/" + id)
		return m["state"] == "delivered", "message is " + m["state"].(string)
	})
	recs := h.history(domain.MessageStream(id))
	var routed []int
	for i, r := range recs {
		if r.Type == "MessageRouted" {
			routed = append(routed, i)
		}
	}
	require.Len(t, routed, 2, "a failover routes twice: %s", types(recs))
	provider := func(i int) string {
		var d struct {
			Route struct {
				Provider string `json:"provider"`
			} `json:"route"`
		}
		require.NoError(t, json.Unmarshal(recs[i].Data, &d))
		return d.Route.Provider
	}
	first, second := provider(routed[0]), provider(routed[1])
	require.NotEqual(t, first, second)
	before, after := recs[routed[1]-1].RecordedAt, recs[routed[1]].RecordedAt
	require.Greater(t, after.Sub(before), 2*time.Millisecond, "the retry waits before routing again")
	// A moment in between, to the millisecond (what the page's field takes).
	asOf := before.Add(after.Sub(before) / 2).Truncate(time.Millisecond)
	if !asOf.After(before) {
		asOf = asOf.Add(time.Millisecond)
	}

	india := time.FixedZone("IST", 5*3600+1800)
	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.inZone("Asia/Kolkata")
	b.open("/console/messages/" + id)
	b.signIn(h.key.APIKey)
	b.waitText(".headline", "delivered")
	b.waitText("#route", "chose "+second)

	// A time in the viewer's zone, with UTC on hover.
	accepted := evalIn[[]string](b, `(() => { const t = document.querySelector('#timeline time');
		return [t.getAttribute('datetime'), t.textContent, t.title]; })()`)
	at, err := time.Parse(time.RFC3339Nano, accepted[0])
	require.NoError(t, err)
	shown := strings.NewReplacer("\u202f", " ", "\u00a0", " ").Replace(accepted[1])
	require.Equal(t, at.In(india).Format("Jan 2, 2006, 3:04:05.000 PM")+" GMT+5:30", shown, "a time in the viewer's zone, named")
	require.Equal(t, "UTC "+at.UTC().Format("2006-01-02 15:04:05.000000"), accepted[2], "UTC on hover")

	// The moment, typed as the viewer's local time.
	b.fill("#as-of", asOf.In(india).Format("2006-01-02T15:04:05.000"))
	b.click(`form.asof button[type="submit"]`)
	b.waitText("main", "Shown as it was at")
	loc, err := url.Parse(evalIn[string](b, `location.href`))
	require.NoError(t, err)
	require.Equal(t, asOf.UTC().Format("2006-01-02T15:04:05.000Z"), loc.Query().Get("as_of"), "the local time reaches the API as the same instant")
	require.Equal(t, asOf.In(india).Format("2006-01-02T15:04:05.000"), evalIn[string](b, `document.querySelector('#as-of').value`),
		"the field shows the moment chosen, to the millisecond")

	// The route decision in force then: the first one.
	route := b.text("#route")
	require.Contains(t, route, "chose "+first)
	require.NotContains(t, route, "chose "+second)
	require.Equal(t, first, evalIn[string](b, `document.querySelector('#route tr.chosen td').textContent`))
	state := b.text(".headline")
	require.NotContains(t, state, "delivered")
	require.Contains(t, state, "queued", "between the routings the message waits for a worker again")

	// The events recorded later are greyed out, the earlier ones are not.
	require.Equal(t, len(recs)-routed[1], evalIn[int](b, `document.querySelectorAll('#timeline li.later').length`))
	require.Equal(t, routed[1], evalIn[int](b, `document.querySelectorAll('#timeline li:not(.later)').length`))
	require.Equal(t, "Routed", evalIn[string](b, `document.querySelector('#timeline li.later .step-title').textContent`))
	require.Contains(t, b.text("#timeline li.later"), "after the chosen time", "greyed out and said in words")

	// A queued message can be canceled now, but not in the past.
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('.actions, #action-reason').length`), "no action as of a past moment")
	b.shoot("message-as-of", 1280, 900)

	b.click(`main .notice a[href="/console/messages/` + id + `"]`)
	b.waitText("#route", "chose "+second)
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('#timeline li.later').length`))
	b.checkClean(h.key.APIKey)
}

// TestConsoleShowsWhoActedAndABrokenChain: every action in a history says
// which key took it (a cancel on the message's timeline, an operator's
// credit among the account's money events), and a history altered after
// it was written shows its hash chain broken, with the event that no
// longer matches.
func TestConsoleShowsWhoActedAndABrokenChain(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	ctx := context.Background()
	status, out := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered}, "body": "Later",
		"send_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", out)
	canceled := messageIDs(out)[0]
	status, out = h.post("/v1/messages/"+canceled+"/cancel", map[string]any{"reason": "customer changed their mind"})
	require.Equal(t, 200, status, "%v", out)

	admin, err := h.running.sys.accounts.Create(ctx, accounts.NewAccount{Name: "Operator",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}, Scopes: accounts.AllScopes})
	require.NoError(t, err)
	mine := h.key
	h.key = admin
	status, out = h.post("/v1/accounts/"+mine.AccountID+"/credits", map[string]any{"amount_micros": 5_000_000, "reason": "invoice 4711 paid"})
	h.key = mine
	require.Equal(t, 201, status, "%v", out)

	orderID, ids := h.order(0, sim.ExampleDelivered)
	h.waitOrdersCompleted(60*time.Second, orderID)
	_, err = h.db.Pool.Exec(ctx, `ALTER TABLE events DISABLE TRIGGER events_immutable`)
	require.NoError(t, err)
	_, err = h.db.Pool.Exec(ctx, `UPDATE events SET data = jsonb_set(data, '{attempt}', '7') WHERE stream_id = $1 AND stream_version = 2`,
		domain.MessageStream(ids[0]))
	require.NoError(t, err)

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.open("/console/messages/" + canceled)
	b.signIn(h.key.APIKey)
	b.waitText("#timeline", "customer changed their mind")
	step := evalIn[string](b, `[...document.querySelectorAll('#timeline li')].find((li) => li.querySelector('.step-title').textContent === 'Canceled').innerText`)
	require.Contains(t, step, "by key "+mine.KeyID, "the cancel says who asked")
	require.Contains(t, b.text("#hash-chain"), "Hash chain intact")
	require.Equal(t, 1, evalIn[int](b, `document.querySelectorAll('#timeline .step-actor').length`), "only the action names an actor, not the pipeline's steps")

	b.open("/console/account")
	b.waitText("#money-events", "Credit added")
	credit := evalIn[string](b, `[...document.querySelectorAll('#money-events tr')].find((tr) => tr.innerText.includes('Credit added')).innerText`)
	require.Contains(t, credit, "invoice 4711 paid")
	require.Contains(t, credit, "by key "+admin.KeyID, "the credit says which operator's key added it")

	b.open("/console/messages/" + ids[0])
	b.waitText("#hash-chain", "Hash chain broken")
	chain := b.text("#hash-chain")
	require.Contains(t, chain, "v2: hash does not match")
	require.Contains(t, evalIn[string](b, `document.querySelector('#hash-chain .badge').className`), "broken")
	b.shoot("message-chain-broken", 1280, 700)
	b.checkClean(h.key.APIKey)
}
