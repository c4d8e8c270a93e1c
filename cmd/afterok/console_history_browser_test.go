package main

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// The message page as an auditor reads it: the state at a past moment.

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
