package main

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// results waits for the search's results and returns the message ids they
// list, in order.
func (b *browser) results() []string {
	b.t.Helper()
	b.text("#results")
	return evalIn[[]string](b, `[...document.querySelectorAll('#results tbody a[href^="/console/messages/"]')].map((a) => a.textContent)`)
}

// search submits the search form as it is filled in now.
func (b *browser) search() {
	b.t.Helper()
	b.click(`form[role="search"] button[type="submit"]`)
}

func (b *browser) address() string {
	b.t.Helper()
	return evalIn[string](b, `location.pathname + location.search`)
}

// TestConsoleSearchesWithEveryFilter: each filter of GET /v1/messages from
// the search form (state, order id, accepted from, accepted before, and
// for an admin another account), each search an address that shows the
// same results when reloaded or pasted, and paging to older and back to
// newer messages. A state is a badge coloured by its kind.
func TestConsoleSearchesWithEveryFilter(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	ctx := context.Background()
	early, earlyIDs := h.order(0, sim.ExampleDelivered, sim.ExampleUndeliverable, sim.ExampleDelivered)
	// The form takes whole seconds: the later order is accepted in a
	// later second than every message of the early one.
	var latest time.Time
	for _, id := range earlyIDs {
		at, err := time.Parse(time.RFC3339Nano, h.getJSON("/v1/messages/" + id)["timestamps"].(map[string]any)["accepted_at"].(string))
		require.NoError(t, err)
		if at.After(latest) {
			latest = at
		}
	}
	var cut time.Time
	storetest.Poll(t, 5*time.Second, func() (bool, string) {
		cut = time.Now().Truncate(time.Second)
		return cut.After(latest), "the next second has not begun"
	})
	late, lateIDs := h.order(0, sim.ExampleDelivered, sim.ExampleDelivered, sim.ExampleUndeliverable)
	other, err := h.running.sys.accounts.Create(ctx, accounts.NewAccount{Name: "Other",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	admin, err := h.running.sys.accounts.Create(ctx, accounts.NewAccount{Name: "Operator",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}, Scopes: accounts.AllScopes})
	require.NoError(t, err)
	mine := h.key
	h.key = other
	otherOrder, otherIDs := h.order(0, sim.ExampleRejected)
	h.key = mine
	h.waitOrdersCompleted(60*time.Second, early, late, otherOrder)
	h.key = admin // sees every account's messages
	for _, id := range append(append(earlyIDs[:3:3], lateIDs...), otherIDs...) {
		storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the store
			m := h.getJSON("/v1/messages/" + id)
			return m["state"] == "delivered" || m["state"] == "failed", "message " + id + " is " + m["state"].(string)
		})
	}
	h.key = mine
	var all []string // newest first, as the API lists them
	for _, m := range h.getJSON("/v1/messages")["messages"].([]any) {
		all = append(all, m.(map[string]any)["message_id"].(string))
	}
	require.Len(t, all, 6)

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.inZone("UTC") // the accepted-from field is filled in as UTC below
	b.open("/console/messages")
	b.signIn(h.key.APIKey)
	require.Equal(t, all, b.results())
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('#f-account_id').length`), "only an admin may search another account")

	// Each state's badge carries its class, so that it is coloured by kind.
	badges := evalIn[map[string][]string](b, `Object.fromEntries([...document.querySelectorAll('#results .badge')].map((s) =>
		[s.textContent, [s.className, getComputedStyle(s).backgroundColor]]))`)
	require.Equal(t, "badge delivered", badges["delivered"][0])
	require.Equal(t, "badge failed", badges["failed"][0])
	require.NotEqual(t, badges["delivered"][1], badges["failed"][1], "delivered and failed are told apart by colour")
	require.NotEqual(t, "rgba(0, 0, 0, 0)", badges["failed"][1])

	// State.
	b.fill("#f-state", "failed")
	b.search()
	require.ElementsMatch(t, []string{earlyIDs[1], lateIDs[2]}, b.results())
	require.Equal(t, "/console/messages?state=failed", b.address())

	// State and order id together, then the order id alone.
	b.do(chromedp.SendKeys(chromedp.CSS("#f-order_id"), early))
	b.search()
	require.Equal(t, []string{earlyIDs[1]}, b.results())
	require.Equal(t, "/console/messages?state=failed&order_id="+early, b.address())
	b.fill("#f-state", "")
	b.search()
	require.ElementsMatch(t, earlyIDs, b.results())

	// Accepted from the cut: the later order; accepted before it: the early one.
	b.fill("#f-order_id", "")
	b.fill("#f-since", cut.UTC().Format("2006-01-02T15:04:05"))
	b.search()
	require.ElementsMatch(t, lateIDs, b.results())
	require.Equal(t, "/console/messages?since="+url.QueryEscape(cut.UTC().Format("2006-01-02T15:04:05.000Z")), b.address())
	b.fill("#f-since", "")
	b.fill("#f-until", cut.UTC().Format("2006-01-02T15:04:05"))
	b.search()
	require.ElementsMatch(t, earlyIDs, b.results())

	// A search pasted into a new tab (or reloaded) is the same search,
	// with its filters back in the form.
	link := "/console/messages?state=failed&order_id=" + early + "&until=" + url.QueryEscape(cut.UTC().Format(time.RFC3339))
	b.open(link)
	require.Equal(t, []string{earlyIDs[1]}, b.results())
	b.do(chromedp.Reload())
	require.Equal(t, []string{earlyIDs[1]}, b.results())
	require.Equal(t, []string{"failed", early, cut.UTC().Format("2006-01-02T15:04:05")}, evalIn[[]string](b,
		`['#f-state', '#f-order_id', '#f-until'].map((s) => document.querySelector(s).value)`))

	// Paging, two at a time: older, older, then back to the newest.
	b.open("/console/messages?limit=2")
	require.Equal(t, all[0:2], b.results())
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('.pager a:not([rel="next"])').length`), "nothing newer than the newest")
	b.click(`.pager a[rel="next"]`)
	require.Equal(t, all[2:4], b.results())
	page2 := b.address()
	b.do(chromedp.Reload())
	require.Equal(t, all[2:4], b.results(), "a page's address shows the same page")
	require.Equal(t, page2, b.address())
	b.click(`.pager a[rel="next"]`)
	require.Equal(t, all[4:6], b.results())
	b.click(`.pager a:not([rel="next"])`)
	require.Equal(t, all[2:4], b.results())
	b.click(`.pager a:not([rel="next"])`)
	require.Equal(t, all[0:2], b.results())
	require.Equal(t, "/console/messages?limit=2", b.address())
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	// An admin searches another account's messages by its id.
	b.signIn(admin.APIKey)
	b.open("/console/messages")
	b.do(chromedp.SendKeys(chromedp.CSS("#f-account_id"), other.AccountID))
	b.search()
	require.Equal(t, otherIDs, b.results())
	require.Equal(t, "/console/messages?account_id="+other.AccountID, b.address())
	b.do(chromedp.Reload())
	require.Equal(t, otherIDs, b.results())
	require.Equal(t, other.AccountID, evalIn[string](b, `document.querySelector('#f-account_id').value`))
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	b.checkClean(h.key.APIKey)
	b.checkClean(admin.APIKey)
}
