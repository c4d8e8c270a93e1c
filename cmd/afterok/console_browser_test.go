package main

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// The console's tests drive Debian's chromium (headless, through the
// DevTools protocol) against a whole afterok on the test's own database.
// No test downloads a browser: .ci/services.sh installs chromium; without
// it the tests skip, and fail under CI=true.

// browser is one headless chromium tab and what it did: every URL it
// requested and every script error it met.
type browser struct {
	t    *testing.T
	ctx  context.Context
	base string

	mu     sync.Mutex
	urls   []string
	errors []string
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("no chromium on PATH: .ci/services.sh installs Debian's chromium package")
		}
		t.Skip("no chromium on PATH (apt-get install chromium, or run .ci/services.sh)")
	}
	b := &browser{t: t, base: base}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.WindowSize(1280, 900), chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("lang", "en-US"))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx, chromedp.WithListener(func(ev any) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			b.urls = append(b.urls, e.Request.URL)
		case *runtime.EventExceptionThrown:
			b.errors = append(b.errors, exceptionText(e.ExceptionDetails))
		}
	}))
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	b.ctx = ctx
	// The first run starts the browser, which lives as long as ctx: no
	// timeout on it (the steps after it have theirs).
	require.NoError(t, chromedp.Do(ctx, chromedp.Navigate("about:blank")))
	return b
}

// step bounds one step: a loaded machine is slow, a hung browser is not.
func (b *browser) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, 90*time.Second)
}

func (b *browser) do(steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		b.t.Fatalf("%v; the page shows: %s", err, b.shows())
	}
}

// shows is what the page says, for a failure's message.
func (b *browser) shows() string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	s, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`location.href + "\n" + document.body.innerText`))
	b.mu.Lock()
	defer b.mu.Unlock()
	return s + "\nscript errors: " + strings.Join(b.errors, "; ")
}

// inZone makes the tab's clock read in zone (an IANA name), as a viewer
// in that zone sees the console. The pages opened after it use it.
func (b *browser) inZone(zone string) {
	b.t.Helper()
	b.do(chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
		_, err := cdp.Call(ctx, t, emulation.SetTimezoneOverride, emulation.SetTimezoneOverrideParams{TimezoneID: zone})
		return err
	}))
}

func (b *browser) open(path string) { b.t.Helper(); b.do(chromedp.Navigate(b.base + path)) }

func (b *browser) click(sel string) { b.t.Helper(); b.do(chromedp.Click(chromedp.CSS(sel))) }

// text waits for sel to show and returns its text.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, chromedp.WaitVisible(chromedp.CSS(sel))))
	s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
	require.NoError(b.t, err)
	return s
}

// waitText polls until sel's text contains want.
func (b *browser) waitText(sel, want string) {
	b.t.Helper()
	storetest.Poll(b.t, 60*time.Second, func() (bool, string) {
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			return false, sel + ": " + err.Error()
		}
		if strings.Contains(s, want) {
			return true, ""
		}
		return false, sel + " says: " + s + "\nthe page: " + b.shows()
	})
}

// fill sets a field's value as a person's typing would, through the
// page's own DOM: chromedp's SetValue refuses the date and time fields.
func (b *browser) fill(sel, value string) {
	b.t.Helper()
	b.text(sel)
	evalIn[bool](b, `(document.querySelector(`+jsString(sel)+`).value = `+jsString(value)+`, true)`)
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func evalIn[T any](b *browser, js string) T {
	b.t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(b.t, err)
	return v
}

func (b *browser) signIn(key string) {
	b.t.Helper()
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name="api_key"]`)))
	evalIn[bool](b, `(document.querySelector('input[name="api_key"]').value = "", true)`)
	b.do(chromedp.SendKeys(chromedp.CSS(`input[name="api_key"]`), key))
	typed := evalIn[string](b, `document.querySelector('input[name="api_key"]').value`)
	require.Equal(b.t, key, typed)
	b.do(chromedp.Click(chromedp.CSS(`#sign-in-form button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#nav`)))
}

// shoot writes a screenshot of the page into docs/console/ when
// AFTEROK_CONSOLE_SCREENSHOTS is set (the README shows them).
func (b *browser) shoot(name string, width, height int64) {
	b.t.Helper()
	if os.Getenv("AFTEROK_CONSOLE_SCREENSHOTS") == "" {
		return
	}
	ctx, cancel := b.step()
	defer cancel()
	require.NoError(b.t, chromedp.Do(ctx, chromedp.EmulateViewport(width, height),
		chromedp.Sleep(300*time.Millisecond))) // the layout settles at the new width: a picture, not a result
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	require.NoError(b.t, err)
	require.NoError(b.t, chromedp.Do(ctx, chromedp.EmulateViewport(1280, 900)))
	dir := filepath.Join("..", "..", "docs", "console")
	require.NoError(b.t, os.MkdirAll(dir, 0o755))
	require.NoError(b.t, os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644))
}

// checkClean fails on a script error and on a requested URL holding key.
func (b *browser) checkClean(key string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	require.Empty(b.t, b.errors, "script errors in the console")
	require.NotEmpty(b.t, b.urls)
	for _, u := range b.urls {
		require.NotContains(b.t, u, key, "the API key is in a requested URL")
		require.NotContains(b.t, u, url.QueryEscape(key))
	}
}

// getJSON reads an API resource as the test's account.
func (h *harness) getJSON(path string) map[string]any {
	h.t.Helper()
	req, _ := http.NewRequest("GET", "http://"+h.cfg.Addr+path, nil)
	req.Header.Set("Authorization", "Bearer "+h.key.APIKey)
	res, err := http.DefaultClient.Do(req)
	require.NoError(h.t, err)
	defer res.Body.Close()
	var out map[string]any
	require.NoError(h.t, json.NewDecoder(res.Body).Decode(&out))
	return out
}

// TestConsoleFollowsAMessageInABrowser is what support does: sign in, search
// by number, open the message, read its timeline and route reasons, open
// its order and the account, try another account's message (not found),
// and sign out. The key must never be in a URL, the server's logs or
// localStorage.
func TestConsoleFollowsAMessageInABrowser(t *testing.T) {
	h := newHarness(t)
	logs := &storetest.Logs{}
	h.logs = logs
	h.start(dispatch.Hooks{})
	base := "http://" + h.cfg.Addr
	orderID, ids := h.order(0, sim.ExampleDelivered, sim.ExampleFailover, sim.ExampleUndeliverable)
	h.waitOrdersCompleted(60*time.Second, orderID)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the order's completion
		o := h.getJSON("/v1/orders/" + orderID)
		return o["state"] == "completed", "order is " + o["state"].(string)
	})
	other, err := h.running.sys.accounts.Create(context.Background(), accounts.NewAccount{Name: "Other",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	admin, err := h.running.sys.accounts.Create(context.Background(), accounts.NewAccount{Name: "Operator",
		Credit: domain.Money{AmountMicros: 10_000_000, Currency: "EUR"}, Scopes: accounts.AllScopes})
	require.NoError(t, err)
	mine := h.key
	h.key = other
	_, otherIDs := h.order(0, sim.ExampleDelivered)
	h.key = mine

	b := newBrowser(t, base)
	b.open("/console/")
	b.shoot("sign-in", 1280, 700)
	// A wrong key is refused with words, and the page stays signed out.
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name="api_key"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="api_key"]`), "aok_not-a-key"),
		chromedp.Click(chromedp.CSS(`#sign-in-form button[type="submit"]`)))
	require.Contains(t, b.text("#sign-in-error"), "unknown or was revoked")
	b.signIn(h.key.APIKey)
	require.Equal(t, h.key.APIKey, evalIn[string](b, `sessionStorage.getItem("afterok.api_key")`), "the key is kept in the tab's sessionStorage")

	// Search by number, as typed by a person (no +).
	b.do(chromedp.WaitVisible(chromedp.CSS(`input[name="to"]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name="to"]`), strings.TrimPrefix(sim.ExampleFailover, "+")),
		chromedp.Click(chromedp.CSS(`form[role="search"] button[type="submit"]`)))
	results := b.text("#results")
	require.Contains(t, results, sim.ExampleFailover)
	require.Contains(t, results, "delivered")
	require.NotContains(t, results, sim.ExampleDelivered, "the search filters by number")
	loc := evalIn[string](b, `location.pathname + location.search`)
	require.Equal(t, "/console/messages?to="+url.QueryEscape(strings.TrimPrefix(sim.ExampleFailover, "+")), loc, "the search is a link")
	b.shoot("search", 1280, 700)

	// The message: its timeline, with the failover's retry and both routing
	// decisions, every candidate with its reason, the raw receipt and the
	// hash chain.
	b.click(`#results a[href^="/console/messages/"]`)
	timeline := b.text("#timeline")
	for _, want := range []string{"Accepted", "Queued for a worker", "Routed", "Will be retried", "Submitted to the provider", "Delivered",
		"failed this message earlier", "chosen", "Raw receipt from the provider", "Hash chain intact", "after the previous step", "since accepted"} {
		require.Contains(t, timeline, want)
	}
	require.Contains(t, b.text(".headline"), "delivered")
	b.shoot("message", 1280, 900)
	b.shoot("message-phone", 390, 844)

	// A failed message says why in words.
	b.open("/console/messages?to=" + url.QueryEscape(sim.ExampleUndeliverable))
	b.click(`#results a[href^="/console/messages/"]`)
	b.waitText("main", "Why it failed")
	require.Contains(t, b.text("main"), "The network could not deliver it to the phone")

	// Its order, by the link on the message page, with its counts.
	b.click(`main a[href^="/console/orders/"]`)
	b.waitText("#counts", "2\ndelivered")
	require.Contains(t, b.text("main"), orderID)
	b.shoot("order", 1280, 800)

	// Live counts: an order in flight when its page opens. Its message gets
	// no receipt and expires; the counts change without a reload.
	inFlight, _ := h.order(15, sim.ExampleNoReceipt)
	b.open("/console/orders/" + inFlight)
	b.waitText("#live", "live")
	opened := evalIn[float64](b, `performance.timeOrigin`)
	b.waitText("#counts", "1\nexpired")
	require.Equal(t, opened, evalIn[float64](b, `performance.timeOrigin`), "the counts changed in the page, not by a reload")

	b.open("/console/account")
	b.waitText("#money-events", "Price reserved")
	b.shoot("account", 1280, 800)

	// Another account's message, by its id in the URL: not found, exactly
	// as a message that does not exist.
	b.open("/console/messages/" + otherIDs[0])
	require.Contains(t, b.text(".notice.error"), "Not found")

	require.Equal(t, "{}", evalIn[string](b, `JSON.stringify(Object.assign({}, localStorage))`), "nothing is kept in localStorage")
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))
	require.Zero(t, evalIn[int](b, `sessionStorage.length`), "sign-out forgets the key")
	b.open("/console/messages/" + ids[0])
	b.text(`input[name="api_key"]`) // a deep link signed out asks for the key

	// An admin key sees the providers' statistics.
	b.signIn(admin.APIKey)
	b.open("/console/providers")
	b.waitText("#providers", "sim-b")
	b.shoot("providers", 1280, 700)
	b.do(chromedp.Click(chromedp.CSS("#sign-out")), chromedp.WaitVisible(chromedp.CSS("#sign-in")))

	b.checkClean(h.key.APIKey)
	b.checkClean(admin.APIKey)
	require.Contains(t, logs.String(), "route=/v1/messages/{id}/events", "the request log lines were captured")
	for _, key := range []string{h.key.APIKey, admin.APIKey, "aok_not-a-key"} {
		require.NotContains(t, logs.String(), key, "an API key is in the server's logs")
	}
}

func exceptionText(d *runtime.ExceptionDetails) string {
	if d.Exception != nil && d.Exception.Description != "" {
		return d.Exception.Description
	}
	return d.Text
}

// TestConsoleCancelsAScheduledMessage: a message scheduled for later is
// canceled from its page, with a reason, and the page then shows it
// canceled, the reason in its history.
func TestConsoleCancelsAScheduledMessage(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	status, out := h.post("/v1/orders", map[string]any{"to": []string{sim.ExampleDelivered}, "body": "Later",
		"send_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
	require.Equal(t, 202, status, "%v", out)
	id := out["messages"].([]any)[0].(map[string]any)["message_id"].(string)

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.open("/console/messages/" + id)
	b.signIn(h.key.APIKey)
	b.waitText(".headline", "scheduled")

	// Fault: the read model falls behind the event log. A transaction of
	// this database that holds an id keeps every tail reader (the
	// projector among them) from passing it, while the message's history,
	// read from its stream, already has the cancel.
	ctx := context.Background()
	holder, err := h.db.Pool.Begin(ctx)
	require.NoError(t, err)
	defer func() { _ = holder.Rollback(ctx) }()
	require.NoError(t, holder.QueryRow(ctx, `SELECT pg_current_xact_id()::text`).Scan(new(string)))

	b.do(chromedp.SendKeys(chromedp.CSS("#action-reason"), "customer asked to stop it"),
		chromedp.Click(chromedp.CSS(".actions button[type=submit]")))
	b.waitText("#catching-up", "The summary is catching up")
	b.waitText("#timeline", "customer asked to stop it")
	require.Contains(t, b.text(".headline"), "scheduled", "the summary has not folded the cancel in yet")

	require.NoError(t, holder.Rollback(ctx))
	b.waitText(".headline", "canceled") // the page shows itself again, by itself
	require.NotContains(t, b.shows(), "The summary is catching up")
	b.waitText("#timeline", "customer asked to stop it")
	b.checkClean(h.key.APIKey)
}

// TestDevBannerShowsTheConsole: make run prints the console's address
// beside the demo key it signs in with.
func TestDevBannerShowsTheConsole(t *testing.T) {
	out := &syncBuffer{}
	s := &system{env: &environment{stdout: out}, cfg: Config{NATSURL: "nats://127.0.0.1:4222"}, apiAddr: "127.0.0.1:8080", simAddr: "127.0.0.1:8090"}
	s.banner(demoCredentials{APIKey: "aok_demo", AccountID: "01ARZ3NDEKTSV4RRFFQ69G5FAV"})
	require.Regexp(t, `demo key +aok_demo .*\n +console +http://127\.0\.0\.1:8080/console/ `, out.String())
}

// TestConsoleRedrivesAFailedMessage: a message that failed at the
// provider is re-driven from its page with a reason; the page then shows
// where its copy went, the re-drive and the reason in its timeline, and
// the copy's page links back.
func TestConsoleRedrivesAFailedMessage(t *testing.T) {
	h := newHarness(t)
	h.start(dispatch.Hooks{})
	orderID, ids := h.order(0, sim.ExampleUndeliverable)
	h.waitOrdersCompleted(60*time.Second, orderID)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the store
		m := h.getJSON("/v1/messages/" + ids[0])
		return m["state"] == "failed", "message is " + m["state"].(string)
	})

	b := newBrowser(t, "http://"+h.cfg.Addr)
	b.open("/console/messages/" + ids[0])
	b.signIn(h.key.APIKey)
	b.waitText(".headline", "failed")
	b.do(chromedp.SendKeys(chromedp.CSS("#action-reason"), "carrier outage is over"),
		chromedp.Click(chromedp.CSS(".actions button[type=submit]")))
	b.waitText("main", "Re-driven as")
	b.waitText("#timeline", "carrier outage is over")
	require.Contains(t, b.text(".headline"), "failed", "the original stays failed")
	copyID := h.getJSON("/v1/messages/" + ids[0])["redriven_as"].(string)
	require.NotEmpty(t, copyID)
	require.Contains(t, b.text("#timeline"), "Sent again as "+copyID)
	require.Contains(t, b.text("#timeline"), "by key "+h.key.KeyID, "the re-drive says who asked")
	require.Zero(t, evalIn[int](b, `document.querySelectorAll(".actions button[type=submit]").length`), "no second re-drive is offered")
	b.shoot("message-redriven", 1280, 900)
	b.click(`main a[href="/console/messages/` + copyID + `"]`)
	b.waitText("main", "Re-drive of")
	b.waitText("#timeline", "a re-drive of "+ids[0])

	// An order's failed messages, from the order's page.
	bulk, bulkIDs := h.order(0, sim.ExampleUndeliverable, sim.ExampleRejected, sim.ExampleDelivered)
	h.waitOrdersCompleted(60*time.Second, bulk)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		o := h.getJSON("/v1/orders/" + bulk)
		return o["state"] == "completed", "order is " + o["state"].(string)
	})
	b.open("/console/orders/" + bulk)
	b.do(chromedp.SendKeys(chromedp.CSS("#redrive-reason"), "both numbers fixed"),
		chromedp.Click(chromedp.CSS("#redrive button[type=submit]")))
	b.waitText("#redrive-result", "Re-driven 2 messages as")
	b.shoot("order-redriven", 1280, 900)
	for _, id := range bulkIDs[:2] {
		storetest.Poll(t, 30*time.Second, func() (bool, string) { // the read model trails the store
			return h.getJSON("/v1/messages/" + id)["redriven_as"] != nil, "message " + id + " shows no redriven_as"
		})
	}
	require.Nil(t, h.getJSON("/v1/messages/" + bulkIDs[2])["redriven_as"], "the delivered one is not re-driven")
	b.click(`#redrive-result a[href^="/console/orders/"]`)
	b.waitText(".headline", "Order")
	require.Contains(t, evalIn[string](b, `location.pathname`), "/console/orders/")
	require.NotContains(t, evalIn[string](b, `location.pathname`), bulk, "the link opens the new order")
	b.checkClean(h.key.APIKey)
}
