package sim_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
)

type reply struct {
	status   int
	replayed bool
	ID       string `json:"id"`
	Status   string `json:"status"`
	Error    struct {
		Code string `json:"code"`
	} `json:"error"`
	Results []struct {
		Status string `json:"status"`
		ID     string `json:"id"`
		Error  struct {
			Code      string `json:"code"`
			Retryable bool   `json:"retryable"`
		} `json:"error"`
	} `json:"results"`
}

// submit posts one raw submission, so that tests can do what our adapter
// never would (reuse an attempt under another key).
func submit(t *testing.T, h *harness, prov, key, ref string, attempt int, to string) reply {
	t.Helper()
	body := fmt.Sprintf(`{"reference":%q,"attempt":%d,"to":%q,"from":"afterok","body":"hi","segments":1}`, ref, attempt, to)
	return do(t, h, prov, "/v1/messages", key, body)
}

func do(t *testing.T, h *harness, prov, path, key, body string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.url+"/"+prov+path, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testProviders()[prov].APIKey)
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := reply{status: resp.StatusCode, replayed: resp.Header.Get("Idempotent-Replayed") == "true"}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatalf("undecodable answer (%d): %v", resp.StatusCode, err)
	}
	return r
}

func TestReplayIsNotASend(t *testing.T) {
	h := start(t, nil)
	first := submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	again := submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	if first.status != 200 || first.replayed || again.status != 200 || !again.replayed || again.ID != first.ID {
		t.Fatalf("first %+v, again %+v: want one acceptance replayed with the same id", first, again)
	}
	st := h.sim.Stats()
	if st.Submitted != 1 || st.IdempotentReplays != 1 || st.DuplicateSubmissions != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sink.count() == 1, "the receipt" })
	if got := h.sink.byMessage("m1"); len(got) != 1 || got[0].ProviderMessageID != first.ID {
		t.Fatalf("receipts %+v: want exactly one, for %s", got, first.ID)
	}
}

func TestDuplicateSubmissions(t *testing.T) {
	h := start(t, nil)
	to := "+4915112340000"
	steps := []struct {
		prov, key string
		attempt   int
		dups      int64
	}{
		{"sim-a", "m1:1", 1, 0},
		{"sim-a", "m1:1", 1, 0},          // replay: same key
		{"sim-a", "retry-of-m1:1", 1, 1}, // same attempt, another key: a second send
		{"sim-b", "m1:1", 1, 2},          // same attempt through another provider
		{"sim-a", "m1:2", 2, 2},          // a new attempt is a legitimate send
	}
	for i, s := range steps {
		if r := submit(t, h, s.prov, s.key, "m1", s.attempt, to); r.status != 200 {
			t.Fatalf("step %d answered %d", i, r.status)
		}
		if got := h.sim.Stats().DuplicateSubmissions; got != s.dups {
			t.Fatalf("after step %d duplicate_submissions = %d, want %d", i, got, s.dups)
		}
	}
	// A batch item is held to the same rule.
	batch := `{"messages":[{"reference":"m1","attempt":2,"to":"+4915112340000","from":"a","body":"hi","segments":1,"idempotency_key":"x"}]}`
	if r := do(t, h, "sim-b", "/v1/messages/batch", "", batch); r.status != 200 || r.Results[0].Status != "accepted" {
		t.Fatalf("batch answered %+v", r)
	}
	st := h.sim.Stats()
	if st.DuplicateSubmissions != 3 || st.ByProvider["sim-b"].DuplicateSubmissions != 2 || st.Submitted != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFailFirstIsPerReferenceAcrossProviders(t *testing.T) {
	h := start(t, nil)
	to := "+4915112340003"
	if r := submit(t, h, "sim-a", "m3:1", "m3", 1, to); r.status != 503 || r.Error.Code != "unavailable" {
		t.Fatalf("first submission: %+v, want 503 unavailable", r)
	}
	if r := submit(t, h, "sim-b", "m3:2", "m3", 2, to); r.status != 200 {
		t.Fatalf("failover submission: %+v, want acceptance", r)
	}
	// A transient refusal is not remembered: the same key may be retried.
	if r := submit(t, h, "sim-a", "m3:1", "m3", 1, to); r.status != 200 || r.replayed {
		t.Fatalf("retry of the refused key: %+v, want a fresh acceptance", r)
	}
	if st := h.sim.Stats(); st.TransientFailures != 1 || st.Submitted != 2 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestRefusals(t *testing.T) {
	h := start(t, nil)
	cases := []struct {
		name   string
		prov   string
		key    string
		auth   string
		body   string
		status int
		code   string
	}{
		{"invalid destination", "sim-a", "k1", "key-a", `{"reference":"m","attempt":1,"to":"+4915112340002","from":"a","body":"hi","segments":1}`, 400, "invalid_destination"},
		{"not a number", "sim-a", "k2", "key-a", `{"reference":"m","attempt":1,"to":"12345","from":"a","body":"hi","segments":1}`, 400, "invalid_destination"},
		{"empty body", "sim-a", "k3", "key-a", `{"reference":"m","attempt":1,"to":"+4915112340000","from":"a","body":"","segments":1}`, 422, "rejected"},
		{"wrong key", "sim-a", "k4", "key-b", `{"reference":"m","attempt":1,"to":"+4915112340000","from":"a","body":"hi","segments":1}`, 401, "unauthorized"},
		{"unknown provider", "sim-z", "k5", "key-a", `{}`, 404, "not_found"},
		{"no idempotency key", "sim-a", "", "key-a", `{"reference":"m","attempt":1,"to":"+4915112340000","from":"a","body":"hi","segments":1}`, 400, "invalid_request"},
		{"unknown field", "sim-a", "k6", "key-a", `{"reference":"m","attempt":1,"to":"+4915112340000","from":"a","body":"hi","segments":1,"extra":1}`, 400, "invalid_request"},
		{"zero segments", "sim-a", "k7", "key-a", `{"reference":"m","attempt":1,"to":"+4915112340000","from":"a","body":"hi","segments":0}`, 400, "invalid_request"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, h.url+"/"+c.prov+"/v1/messages", bytes.NewBufferString(c.body))
			req.Header.Set("Authorization", "Bearer "+c.auth)
			if c.key != "" {
				req.Header.Set("Idempotency-Key", c.key)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Code string } `json:"error"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != c.status || body.Error.Code != c.code {
				t.Fatalf("got %d %q, want %d %q", resp.StatusCode, body.Error.Code, c.status, c.code)
			}
		})
	}
	if st := h.sim.Stats(); st.Rejected != 3 || st.Submitted != 0 {
		t.Fatalf("stats %+v: want 3 rejected (the well-formed refusals), none submitted", st.Counters)
	}
}

func TestReceiptsAreSignedBatchedAndPerPart(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.ReceiptBatch = 2; c.ReceiptFlush = time.Hour })
	for i := range 4 {
		submit(t, h, "sim-a", fmt.Sprintf("m%d:1", i), fmt.Sprintf("m%d", i), 1, "+4915112340000")
	}
	multi := `{"reference":"long","attempt":1,"to":"+4915112340001","from":"a","body":"hi","segments":3}`
	if r := do(t, h, "sim-a", "/v1/messages", "long:1", multi); r.status != 200 {
		t.Fatalf("multipart submission: %+v", r)
	}
	// 4 + 3 receipts; the odd one waits for its batch to fill or flush, and
	// ReceiptFlush is an hour, so exactly 6 arrive now in batches of 2.
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sink.count() == 6, "six receipts" })
	h.sink.mu.Lock()
	sizes, refusals := h.sink.sizes, h.sink.refusals
	h.sink.mu.Unlock()
	if len(refusals) != 0 {
		t.Fatalf("the sink refused: %v", refusals)
	}
	for _, n := range sizes {
		if n != 2 {
			t.Fatalf("batch sizes %v, want all 2", sizes)
		}
	}
	h.stop() // the drain sends the seventh
	parts := h.sink.byMessage("long")
	if len(parts) != 3 {
		t.Fatalf("got %d receipts for a 3-part message", len(parts))
	}
	for i, r := range parts {
		if r.Part != i+1 || r.Parts != 3 || r.Status != provider.ReceiptFailed || r.Failure.ProviderCode != "unknown_subscriber" {
			t.Fatalf("part %d: %+v", i, r)
		}
	}
	if st := h.sim.Stats(); st.ReceiptsSent != 7 || st.ReceiptsDropped != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestReceiptRetriedAfterRefusal(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.ReceiptRetries = 3 })
	h.sink.refuse = 2
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	// The sim counts a receipt once the sink's answer is back, just after
	// the sink has recorded it.
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsSent == 1, "the receipt" })
	h.sink.mu.Lock()
	requests := h.sink.requests
	h.sink.mu.Unlock()
	if requests != 3 {
		t.Fatalf("sink saw %d requests, want 2 refused + 1 accepted", requests)
	}
	if st := h.sim.Stats(); st.ReceiptsSent != 1 || st.ReceiptsFailed != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestReceiptGivenUpAfterRetries(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.ReceiptRetries = 2 })
	h.sink.refuse = 1000
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsFailed == 1, "the receipt to be given up" })
	h.sink.mu.Lock()
	requests := h.sink.requests
	h.sink.mu.Unlock()
	if requests != 3 {
		t.Fatalf("sink saw %d requests, want 1 + 2 retries", requests)
	}
}

// TestReceiptOutlastsAnOutageOfTheReceiver: with the default limits (no
// count of tries, hours of age) a receiver that refuses callbacks for a
// long run of tries, as during a database outage behind it, still gets the
// receipt once it answers again: an outage costs the receipt time, not the
// message its delivered state.
func TestReceiptOutlastsAnOutageOfTheReceiver(t *testing.T) {
	def := sim.DefaultConfig()
	h := start(t, func(c *sim.Config) {
		c.ReceiptRetries, c.ReceiptMaxAge = def.ReceiptRetries, def.ReceiptMaxAge
		c.ReceiptBackoff, c.ReceiptMaxBackoff = time.Millisecond, 2*time.Millisecond
	})
	h.sink.refuse = 200
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsSent == 1, "the receipt after 200 refusals" })
	if st := h.sim.Stats(); st.ReceiptsFailed != 0 || st.ReceiptsDropped != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

// TestReceiptGivenUpAtItsMaxAge: the retries end once ReceiptMaxAge has
// passed since the first try, and the receipt is counted as failed.
func TestReceiptGivenUpAtItsMaxAge(t *testing.T) {
	h := start(t, func(c *sim.Config) {
		c.ReceiptRetries, c.ReceiptMaxAge = 0, 100*time.Millisecond
		c.ReceiptBackoff, c.ReceiptMaxBackoff = time.Millisecond, 5*time.Millisecond
	})
	h.sink.refuse = 1_000_000
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsFailed == 1, "the receipt to be given up" })
	h.sink.mu.Lock()
	requests := h.sink.requests
	h.sink.mu.Unlock()
	if requests < 5 {
		t.Fatalf("sink saw %d requests: given up before its max age", requests)
	}
}

func TestReceiptWithWrongSecretIsRefused(t *testing.T) {
	h := start(t, func(c *sim.Config) {
		c.Providers = map[string]sim.ProviderConfig{"sim-a": {APIKey: "key-a", Secret: "not-the-shared-secret"}}
		c.ReceiptRetries, c.ReceiptMaxAge = 0, time.Nanosecond // give up after the first refusal
	})
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsFailed == 1, "the receipt to fail" })
	h.sink.mu.Lock()
	defer h.sink.mu.Unlock()
	if len(h.sink.refusals) != 1 || !errorsAsSignature(h.sink.refusals[0], provider.SignatureMismatch) {
		t.Fatalf("refusals %v, want one signature mismatch", h.sink.refusals)
	}
}

func TestShutdownDrainsQueuedReceipts(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.ReceiptDelay = time.Hour })
	for i := range 3 {
		submit(t, h, "sim-b", fmt.Sprintf("m%d:1", i), fmt.Sprintf("m%d", i), 1, "+4915112340000")
	}
	if n := h.sink.count(); n != 0 {
		t.Fatalf("%d receipts sent an hour early", n)
	}
	h.stop()
	if n := h.sink.count(); n != 3 {
		t.Fatalf("after Run returned the sink has %d receipts, want 3", n)
	}
	for _, r := range h.sink.byMessage("m0") {
		if r.DoneAt.After(time.Now()) {
			t.Fatalf("receipt done in the future: %v", r.DoneAt)
		}
	}
	if st := h.sim.Stats(); st.ReceiptsSent != 3 || st.ReceiptsDropped != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
	if r := submit(t, h, "sim-b", "late:1", "late", 1, "+4915112340000"); r.status != 503 {
		t.Fatalf("a submission after Run returned was answered %d, want 503", r.status)
	}
}

func TestDrainGivesUpAtItsDeadline(t *testing.T) {
	h := start(t, func(c *sim.Config) {
		c.ReceiptDelay = time.Hour
		c.ReceiptRetries = 1000
		c.ReceiptBackoff = time.Hour
		c.DrainTimeout = 20 * time.Millisecond
	})
	h.sink.refuse = 1_000_000
	for i := range 3 {
		submit(t, h, "sim-a", fmt.Sprintf("m%d:1", i), fmt.Sprintf("m%d", i), 1, "+4915112340000")
	}
	start := time.Now()
	h.stop()
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("Run took %v to stop with a 20 ms drain deadline", took)
	}
	if st := h.sim.Stats(); st.ReceiptsDropped != 3 || st.ReceiptsSent != 0 {
		t.Fatalf("stats %+v: want all 3 receipts counted as dropped", st.Counters)
	}
}

func TestFullQueueHoldsSubmissionsBack(t *testing.T) {
	const n = 40
	h := start(t, func(c *sim.Config) {
		c.ReceiptQueue = 1
		c.ReceiptWorkers = 1
		c.ReceiptBatch = 1
		c.ReceiptFlush = 0
	})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if r := submit(t, h, "sim-a", fmt.Sprintf("m%d:1", i), fmt.Sprintf("m%d", i), 1, "+4915112340000"); r.status != 200 {
				t.Errorf("submission %d answered %d", i, r.status)
			}
		})
	}
	wg.Wait()
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return h.sim.Stats().ReceiptsSent == n, "every receipt" })
	if got := h.sink.count(); got != n {
		t.Fatalf("the sink has %d receipts, want %d", got, n)
	}
	if st := h.sim.Stats(); st.ReceiptsSent != n || st.ReceiptsDropped != 0 || st.ReceiptsFailed != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestSubmitLatency(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.SubmitLatency = 60 * time.Millisecond; c.SubmitJitter = 10 * time.Millisecond })
	began := time.Now()
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	if took := time.Since(began); took < 50*time.Millisecond {
		t.Fatalf("answered after %v, want at least 50 ms", took)
	}
	// A client that gives up during the pause leaves nothing behind.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.url+"/sim-a/v1/messages",
		bytes.NewBufferString(`{"reference":"m2","attempt":1,"to":"+4915112340000","from":"a","body":"hi","segments":1}`))
	req.Header.Set("Authorization", "Bearer key-a")
	req.Header.Set("Idempotency-Key", "m2:1")
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatal("the request outlived its 5 ms deadline")
	}
	if r := submit(t, h, "sim-a", "m2:1", "m2", 1, "+4915112340000"); r.replayed {
		t.Fatal("an abandoned request was remembered")
	}
}

func TestStatsEndpoint(t *testing.T) {
	h := start(t, nil)
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	submit(t, h, "sim-a", "m1:1", "m1", 1, "+4915112340000")
	submit(t, h, "sim-b", "m2:1", "m2", 1, "+4915112340002")
	resp, err := http.Get(h.url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var got map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"submitted", "receipts_sent", "receipts_failed", "receipts_dropped", "duplicate_submissions", "idempotent_replays", "rejected", "transient_failures"} {
		if _, ok := got[k]; !ok {
			t.Errorf("stats lack %q: %v", k, got)
		}
	}
	if got["submitted"] != 1.0 || got["idempotent_replays"] != 1.0 || got["rejected"] != 1.0 {
		t.Errorf("stats %v", got)
	}
	byProvider, _ := got["by_provider"].(map[string]any)
	a, _ := byProvider["sim-a"].(map[string]any)
	b, _ := byProvider["sim-b"].(map[string]any)
	if a["submitted"] != 1.0 || b["rejected"] != 1.0 {
		t.Errorf("by_provider %v", byProvider)
	}
}

func TestRunTwice(t *testing.T) {
	s, err := sim.New(sim.Config{Providers: testProviders(), CallbackBase: "http://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("first Run: %v", err)
	}
	if err := s.Run(ctx); err == nil {
		t.Fatal("a second Run was accepted")
	}
}

// TestEarlyReceiptSurvivesItsSubmitterLeaving: a …0005 submission is
// accepted, its receipt refused for a while, and the submitter gives up
// waiting. The provider took the message, so the receipt must still be
// delivered later, not dropped with the request.
func TestEarlyReceiptSurvivesItsSubmitterLeaving(t *testing.T) {
	h := start(t, func(c *sim.Config) { c.ReceiptRetries = 50; c.ReceiptBackoff = 20 * time.Millisecond })
	h.sink.refuse = 5
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/sim-a/v1/messages",
		strings.NewReader(`{"reference":"m5","attempt":1,"to":"+4915112340005","body":"x","segments":1}`))
	req.Header.Set("Authorization", "Bearer "+testProviders()["sim-a"].APIKey)
	req.Header.Set("Idempotency-Key", "m5:1")
	if res, err := http.DefaultClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("the submit answered although its receipt was still refused")
	}
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return len(h.sink.byMessage("m5")) == 1, "the early receipt" })
	if st := h.sim.Stats(); st.ReceiptsDropped != 0 || st.Submitted != 1 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

// TestEarlyReceiptDoesNotHoldTheSubmitThroughAnOutage: a …0005 receipt that
// the receiver keeps refusing (its database is away) holds the submit answer
// for a couple of seconds at most, then goes to the retrying queue. Held for
// the receipt's whole retry budget (hours), the submitter would time the
// batch out and count the provider as failing.
func TestEarlyReceiptDoesNotHoldTheSubmitThroughAnOutage(t *testing.T) {
	def := sim.DefaultConfig()
	h := start(t, func(c *sim.Config) {
		c.ReceiptRetries, c.ReceiptMaxAge = def.ReceiptRetries, def.ReceiptMaxAge
		c.ReceiptBackoff, c.ReceiptMaxBackoff = time.Millisecond, 5*time.Millisecond
	})
	h.sink.refuse = 800 // about 2 s of refusals at this backoff, then some
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", h.url+"/sim-a/v1/messages",
		strings.NewReader(`{"reference":"m5","attempt":1,"to":"+4915112340005","body":"x","segments":1}`))
	req.Header.Set("Authorization", "Bearer "+testProviders()["sim-a"].APIKey)
	req.Header.Set("Idempotency-Key", "m5:1")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("the submit was held while the receipt was refused: %v", err)
	}
	res.Body.Close()
	if res.StatusCode/100 != 2 {
		t.Fatalf("submit answered %d", res.StatusCode)
	}
	storetest.Poll(t, 5*time.Second, func() (bool, string) { return len(h.sink.byMessage("m5")) == 1, "the early receipt, later" })
}
