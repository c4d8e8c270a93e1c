package provider_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
)

func message(id, to string) provider.Submission {
	return provider.Submission{MessageID: id, Attempt: 1, To: to, From: "afterok", Body: "hello", Segments: 1}
}

// failure unwraps an outcome's *provider.Error, failing the test if there is none.
func failure(t *testing.T, o provider.Outcome) *provider.Error {
	t.Helper()
	var pe *provider.Error
	if !errors.As(o.Err, &pe) {
		t.Fatalf("outcome %+v: want a *provider.Error", o)
	}
	return pe
}

// checkTestNumbers checks the outcomes of one submission per test number
// (…0000 to …0005, in that order) and the receipts that follow.
func checkTestNumbers(t *testing.T, e *env, prefix string, got []provider.Outcome) {
	t.Helper()
	for i, o := range got {
		wantErr := i == 2 || i == 3
		if (o.Err != nil) != wantErr {
			t.Fatalf("…000%d: outcome %+v", i, o)
		}
		if !wantErr && o.Result.ProviderMessageID == "" {
			t.Fatalf("…000%d: accepted without an id", i)
		}
	}
	if f := failure(t, got[2]).Failure; f.Code != domain.CodeInvalidDestination || !f.Permanent || f.Stage != domain.StageSubmit || f.Provider != "sim-a" {
		t.Errorf("…0002: %+v, want permanent invalid_destination at submit", f)
	}
	if f := failure(t, got[3]).Failure; f.Code != domain.CodeProviderUnavailable || f.Permanent {
		t.Errorf("…0003 first try: %+v, want transient provider_unavailable", f)
	}

	delivered := e.waitReceipt(prefix + "0")
	if delivered.Status != provider.ReceiptDelivered || delivered.ProviderMessageID != got[0].Result.ProviderMessageID || delivered.Attempt != 1 {
		t.Errorf("…0000 receipt %+v", delivered)
	}
	undeliverable := e.waitReceipt(prefix + "1")
	if undeliverable.Status != provider.ReceiptFailed || undeliverable.Failure.Code != domain.CodeUndeliverable ||
		!undeliverable.Failure.Permanent || undeliverable.Failure.Stage != domain.StageDelivery {
		t.Errorf("…0001 receipt %+v (failure %+v)", undeliverable, undeliverable.Failure)
	}
	if r := e.receiptsFor(prefix + "5"); len(r) != 1 || r[0].Status != provider.ReceiptDelivered {
		t.Errorf("…0005: receipts %+v when Submit returned, want the delivered one already there", r)
	}
	retry := message(prefix+"3", "+4915112340003")
	retry.Attempt = 2
	if o := e.adapter("sim-b", nil).Submit(context.Background(), []provider.Submission{retry})[0]; o.Err != nil {
		t.Fatalf("…0003 on failover: %v", o.Err)
	}
	if r := e.waitReceipt(prefix + "3"); r.Status != provider.ReceiptDelivered || r.Attempt != 2 || r.Provider != "sim-b" {
		t.Errorf("…0003 receipt after failover %+v", r)
	}
	// Receipts fall due in acceptance order and, with one receipt worker,
	// arrive in that order: once a later sim-a message's receipt is in, a
	// receipt for …0004 would be too.
	if o := e.adapter("sim-a", nil).Submit(context.Background(), []provider.Submission{message(prefix+"later", "+4915112349999")})[0]; o.Err != nil {
		t.Fatal(o.Err)
	}
	e.waitReceipt(prefix + "later")
	if r := e.receiptsFor(prefix + "4"); len(r) != 0 {
		t.Errorf("…0004 got receipts %+v, want none ever", r)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.refusals) != 0 {
		t.Errorf("the intake refused callbacks: %v", e.refusals)
	}
}

func testNumberBatch(prefix string) []provider.Submission {
	batch := make([]provider.Submission, 6)
	for i := range batch {
		batch[i] = message(fmt.Sprintf("%s%d", prefix, i), fmt.Sprintf("+49151123%05d", i))
	}
	return batch
}

func TestHTTPTestNumbersSingle(t *testing.T) {
	e := newEnv(t, func(c *sim.Config) { c.ReceiptDelay = 20 * time.Millisecond; c.ReceiptWorkers = 1 })
	a := e.adapter("sim-a", nil)
	var got []provider.Outcome
	for _, s := range testNumberBatch("single-") {
		out := a.Submit(context.Background(), []provider.Submission{s})
		if len(out) != 1 {
			t.Fatalf("%d outcomes for one submission", len(out))
		}
		got = append(got, out[0])
	}
	if e.batches.Load() != 0 {
		t.Fatal("single submissions went to the batch endpoint")
	}
	checkTestNumbers(t, e, "single-", got)
}

func TestHTTPTestNumbersBatch(t *testing.T) {
	e := newEnv(t, func(c *sim.Config) { c.ReceiptDelay = 20 * time.Millisecond; c.ReceiptWorkers = 1 })
	got := e.adapter("sim-a", nil).Submit(context.Background(), testNumberBatch("batch-"))
	if len(got) != 6 || e.batches.Load() != 1 {
		t.Fatalf("%d outcomes in %d batch requests, want 6 in 1", len(got), e.batches.Load())
	}
	checkTestNumbers(t, e, "batch-", got)
}

func TestHTTPReceiptComesBeforeTheAnswer(t *testing.T) {
	// An hour's delay: only the …0005 path can put a receipt at the intake
	// before Submit returns.
	e := newEnv(t, func(c *sim.Config) { c.ReceiptDelay = time.Hour })
	a := e.adapter("sim-a", nil)
	for _, batch := range [][]provider.Submission{
		{message("early-1", "+4915112340005")},
		{message("early-2", "+4915112340005"), message("late-2", "+4915112340000"), message("early-3", "+4915112340005")},
	} {
		for i, o := range a.Submit(context.Background(), batch) {
			id := batch[i].MessageID
			rs := e.receiptsFor(id)
			if strings.HasPrefix(id, "late") {
				if len(rs) != 0 {
					t.Fatalf("%s: a receipt an hour early", id)
				}
				continue
			}
			if o.Err != nil || len(rs) != 1 || rs[0].ProviderMessageID != o.Result.ProviderMessageID {
				t.Fatalf("%s: outcome %+v, receipts at return %+v", id, o, rs)
			}
		}
	}
}

func TestHTTPIdempotentReplay(t *testing.T) {
	e := newEnv(t, nil)
	a := e.adapter("sim-a", nil)
	one := []provider.Submission{message("r1", "+4915112340000")}
	first := a.Submit(context.Background(), one)[0]
	again := a.Submit(context.Background(), one)[0]
	if first.Err != nil || again.Err != nil || first.Result.Replayed || !again.Result.Replayed ||
		again.Result.ProviderMessageID != first.Result.ProviderMessageID {
		t.Fatalf("first %+v, again %+v: want the same id, replayed the second time", first, again)
	}
	batch := []provider.Submission{message("r2", "+4915112340000"), message("r3", "+4915112340002")}
	b1 := a.Submit(context.Background(), batch)
	b2 := a.Submit(context.Background(), batch)
	if b1[0].Result.ProviderMessageID == "" || b2[0].Result.ProviderMessageID != b1[0].Result.ProviderMessageID {
		t.Fatalf("batch ids %q then %q", b1[0].Result.ProviderMessageID, b2[0].Result.ProviderMessageID)
	}
	if f := failure(t, b2[1]).Failure; f.Code != domain.CodeInvalidDestination {
		t.Fatalf("a replayed refusal came back as %+v", f)
	}
	st := e.sim.Stats()
	if st.Submitted != 2 || st.IdempotentReplays != 3 || st.DuplicateSubmissions != 0 {
		t.Fatalf("stats %+v: want 2 sends, 3 replays, no duplicates", st.Counters)
	}
}

func TestHTTPChunksBatchesAndReusesConnections(t *testing.T) {
	e := newEnv(t, nil)
	a := e.adapter("sim-b", func(c *provider.HTTPConfig) { c.MaxBatch = 2 })
	batch := make([]provider.Submission, 5)
	for i := range batch {
		batch[i] = message(fmt.Sprintf("c%d", i), "+4915112340000")
	}
	got := a.Submit(context.Background(), batch)
	ids := map[string]bool{}
	for i, o := range got {
		if o.Err != nil || o.Result.Latency <= 0 {
			t.Fatalf("submission %d: %+v", i, o)
		}
		ids[o.Result.ProviderMessageID] = true
	}
	if len(ids) != 5 || e.batches.Load() != 3 {
		t.Fatalf("%d distinct ids in %d batch requests, want 5 in 3", len(ids), e.batches.Load())
	}
	for i := range 10 {
		a.Submit(context.Background(), []provider.Submission{message(fmt.Sprintf("s%d", i), "+4915112340000")})
	}
	if n := e.conns.Load(); n != 1 {
		t.Fatalf("13 sequential requests opened %d connections, want 1", n)
	}
}

func TestHTTPTimeoutIsTransientAndSafeToResubmit(t *testing.T) {
	e := newEnv(t, func(c *sim.Config) { c.SubmitLatency = 300 * time.Millisecond })
	s := message("slow", "+4915112340000")
	impatient := e.adapter("sim-a", func(c *provider.HTTPConfig) { c.Timeout = 20 * time.Millisecond })
	pe := failure(t, impatient.Submit(context.Background(), []provider.Submission{s})[0])
	if pe.Failure.Code != domain.CodeTimeout || pe.Failure.Permanent || !errors.Is(pe, context.DeadlineExceeded) {
		t.Fatalf("got %+v (%v), want a transient timeout wrapping DeadlineExceeded", pe.Failure, pe.Err)
	}
	if o := e.adapter("sim-a", nil).Submit(context.Background(), []provider.Submission{s})[0]; o.Err != nil {
		t.Fatalf("resubmission: %v", o.Err)
	}
	if st := e.sim.Stats(); st.Submitted != 1 || st.DuplicateSubmissions != 0 {
		t.Fatalf("stats %+v", st.Counters)
	}
}

func TestHTTPCanceledContext(t *testing.T) {
	e := newEnv(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	got := e.adapter("sim-a", nil).Submit(ctx, testNumberBatch("cx-"))
	for i, o := range got {
		pe := failure(t, o)
		if pe.Failure.Code != domain.CodeTimeout || pe.Failure.Permanent || !errors.Is(o.Err, context.Canceled) {
			t.Fatalf("submission %d: %+v", i, pe.Failure)
		}
	}
	if got[0].Err == got[1].Err {
		t.Fatal("items of one batch share one *Error")
	}
}

func TestHTTPWrongKeyFailsOver(t *testing.T) {
	e := newEnv(t, nil)
	a := e.adapter("sim-a", func(c *provider.HTTPConfig) { c.APIKey = "stolen" })
	for _, batch := range [][]provider.Submission{testNumberBatch("k-")[:1], testNumberBatch("k-")} {
		for _, o := range a.Submit(context.Background(), batch) {
			pe := failure(t, o)
			if pe.StatusCode != 401 || pe.Failure.Code != domain.CodeProviderUnavailable || pe.Failure.Permanent ||
				!strings.Contains(pe.Failure.Reason, "API key") {
				t.Fatalf("got %d %+v", pe.StatusCode, pe.Failure)
			}
		}
	}
}

func TestHTTPUnreachable(t *testing.T) {
	e := newEnv(t, nil)
	a := e.adapter("sim-a", nil)
	e.stop()
	// A stopped simulator answers 503; a closed port does not answer.
	if pe := failure(t, a.Submit(context.Background(), []provider.Submission{message("u", "+4915112340000")})[0]); pe.StatusCode != 503 || pe.Failure.Code != domain.CodeProviderUnavailable {
		t.Fatalf("stopped simulator: %d %+v", pe.StatusCode, pe.Failure)
	}
	closed, err := provider.NewHTTP(provider.HTTPConfig{Name: "sim-a", BaseURL: "http://127.0.0.1:1", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	pe := failure(t, closed.Submit(context.Background(), []provider.Submission{message("u", "+4915112340000")})[0])
	if pe.Failure.Code != domain.CodeProviderUnavailable || pe.Failure.Permanent || pe.Err == nil || pe.StatusCode != 0 {
		t.Fatalf("closed port: %+v", pe)
	}
}

func TestNewHTTPValidates(t *testing.T) {
	for _, cfg := range []provider.HTTPConfig{
		{BaseURL: "http://127.0.0.1:1"},
		{Name: "x", BaseURL: "127.0.0.1:1"},
		{Name: "x", BaseURL: "ftp://host"},
	} {
		if _, err := provider.NewHTTP(cfg); err == nil {
			t.Errorf("NewHTTP(%+v) accepted", cfg)
		}
	}
}

func TestHTTPEmptyBatch(t *testing.T) {
	e := newEnv(t, nil)
	if got := e.adapter("sim-a", nil).Submit(context.Background(), nil); len(got) != 0 {
		t.Fatalf("%d outcomes for nothing", len(got))
	}
	if e.conns.Load() != 0 {
		t.Fatal("an empty batch made a request")
	}
}
