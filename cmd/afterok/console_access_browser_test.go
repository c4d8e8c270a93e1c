package main

import (
	"context"
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

// issueKey has the test account's key issue another key of the account
// with just these scopes, as POST /v1/account/keys does for a client.
func (h *harness) issueKey(scopes ...string) string {
	h.t.Helper()
	status, out := h.post("/v1/account/keys", map[string]any{"scopes": scopes})
	require.Equal(h.t, 201, status, "%v", out)
	return out["api_key"].(string)
}

// TestConsoleOffersOnlyWhatTheKeyMay: a key without messages:read is
// refused at sign-in with the scope it lacks; a key that may read but not
// write sees a cancelable and a re-drivable message without the forms
// that would act on them (the full key gets both); an admin key opens
// another account's message and that account's page.
func TestConsoleOffersOnlyWhatTheKeyMay(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	ctx := context.Background()
	status, out := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered}, "body": "Later",
		"send_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", out)
	scheduled := messageIDs(out)[0]
	orderID, ids := h.order(0, sim.ExampleUndeliverable)
	failed := ids[0]
	h.waitOrdersCompleted(60*time.Second, orderID)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the store
		m := h.getJSON("/v1/messages/" + failed)
		return m["state"] == "failed", "message is " + m["state"].(string)
	})
	sender := h.issueKey(accounts.ScopeOrdersWrite)
	reader := h.issueKey(accounts.ScopeMessagesRead, accounts.ScopeEventsRead)
	admin, err := h.running.sys.accounts.Create(ctx, accounts.NewAccount{Name: "Operator",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}, Scopes: accounts.AllScopes})
	require.NoError(t, err)

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.open("/console/messages/" + scheduled)

	// A key that may only send: refused at sign-in, in words that name
	// the scope it lacks; the tab stays signed out and keeps nothing.
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name="api_key"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="api_key"]`), sender),
		chromedp.Click(chromedp.CSS(`#sign-in-form button[type="submit"]`)))
	refused := b.text("#sign-in-error")
	require.Contains(t, refused, "This key is valid but lacks the messages:read scope")
	require.Contains(t, refused, "Ask for a key with messages:read", "it says what to do")
	require.True(t, evalIn[bool](b, `document.querySelector('#nav').hidden`), "still signed out")
	require.Zero(t, evalIn[int](b, `sessionStorage.length`), "a refused key is not kept")

	// A key that may read but not write: the message, but no form to act on it.
	b.signIn(reader)
	b.waitText(".headline", "scheduled")
	require.Contains(t, b.text(".actions"), "lacks the messages:write scope")
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('.actions form, #action-reason').length`), "no cancel form")
	b.open("/console/messages/" + failed)
	b.waitText(".headline", "failed")
	require.Contains(t, b.text(".actions"), "lacks the messages:write scope")
	require.Zero(t, evalIn[int](b, `document.querySelectorAll('.actions form, #action-reason').length`), "no re-drive form")
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	// The account's full key: both forms.
	b.open("/console/messages/" + scheduled)
	b.signIn(h.key.APIKey)
	b.waitText(".headline", "scheduled")
	b.waitText(".actions button[type=submit]", "Cancel this message")
	b.open("/console/messages/" + failed)
	b.waitText(".headline", "failed")
	b.waitText(".actions button[type=submit]", "Re-drive this message")
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	// An admin of another account: this account's message, and from it
	// this account's page (not the admin's own).
	b.open("/console/messages/" + failed)
	b.signIn(admin.APIKey)
	b.waitText(".headline", "failed")
	b.waitText("main", "Why it failed")
	b.click(`main a[href="/console/accounts/` + h.key.AccountID + `"]`)
	b.waitText(".headline", "e2e")
	headline := b.text(".headline")
	require.NotContains(t, headline, "the account of this key")
	require.NotContains(t, headline, "Operator")
	b.waitText("#money-events", "Price reserved")
	require.Contains(t, b.text("main"), h.key.AccountID)
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	for _, key := range []string{sender, reader, h.key.APIKey, admin.APIKey} {
		b.checkClean(key)
	}
}
