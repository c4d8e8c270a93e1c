package provider

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

const (
	// MaxBatchSize is the sandbox protocol's ceiling on one batch request.
	MaxBatchSize = 1000
	// DefaultTimeout bounds one request when HTTPConfig.Timeout is zero.
	DefaultTimeout = 10 * time.Second

	// Answers are read through a limit so that a misbehaving provider cannot
	// make a worker buffer an unbounded body. A single answer is ~150 bytes,
	// a batch item a little more; the limits leave ample room.
	maxSingleAnswer  = 64 << 10
	maxAnswerPerItem = 1 << 10
	// maxDrain is how much of an unread answer we discard to keep the
	// connection reusable; past it, closing the connection is cheaper.
	maxDrain = 64 << 10
)

// HTTPConfig configures an HTTP adapter for one provider account.
type HTTPConfig struct {
	// Name is the provider's name in routes, failures and URLs ("sim-a").
	Name string
	// BaseURL is the provider's API root; requests go to
	// {BaseURL}/{Name}/v1/messages[/batch].
	BaseURL string
	APIKey  string
	// Timeout bounds each HTTP request (not the whole Submit); 0 means
	// DefaultTimeout.
	Timeout time.Duration
	// MaxBatch is the largest batch request sent; 0 or more than
	// MaxBatchSize means MaxBatchSize.
	MaxBatch int
	// Client is used for every request; nil means a client of our own whose
	// transport keeps enough idle connections per host for concurrent
	// workers (net/http's default keeps 2, which makes busy workers redial).
	Client *http.Client
}

// HTTP is a Provider that speaks the sandbox protocol over HTTP. It is safe
// for concurrent use.
type HTTP struct {
	name     string
	apiKey   string
	timeout  time.Duration
	maxBatch int
	client   *http.Client
	oneURL   string
	batchURL string
}

var _ Provider = (*HTTP)(nil)

// NewHTTP returns an adapter for the provider described by cfg.
func NewHTTP(cfg HTTPConfig) (*HTTP, error) {
	if cfg.Name == "" {
		return nil, errors.New("provider: HTTPConfig.Name is required")
	}
	base, err := url.Parse(cfg.BaseURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("provider %s: BaseURL %q is not an http(s) URL", cfg.Name, cfg.BaseURL)
	}
	h := &HTTP{
		name:     cfg.Name,
		apiKey:   cfg.APIKey,
		timeout:  cfg.Timeout,
		maxBatch: cfg.MaxBatch,
		client:   cfg.Client,
	}
	if h.timeout <= 0 {
		h.timeout = DefaultTimeout
	}
	if h.maxBatch <= 0 || h.maxBatch > MaxBatchSize {
		h.maxBatch = MaxBatchSize
	}
	if h.client == nil {
		h.client = newClient()
	}
	root := strings.TrimRight(base.String(), "/") + "/" + url.PathEscape(cfg.Name) + "/v1/messages"
	h.oneURL, h.batchURL = root, root+"/batch"
	return h, nil
}

func newClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = 256
	t.MaxIdleConnsPerHost = 64
	return &http.Client{
		Transport: t,
		// A redirect would re-send a submission to a place we did not
		// configure; treat it as an answer we do not understand instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Name returns the provider's name.
func (h *HTTP) Name() string { return h.name }

// Submit sends one submission through the single endpoint and more through
// the batch endpoint, in chunks of at most MaxBatch sent one after another.
// Each request has its own timeout; ctx bounds them all.
func (h *HTTP) Submit(ctx context.Context, batch []Submission) []Outcome {
	out := make([]Outcome, len(batch))
	if len(batch) == 1 {
		out[0] = h.submitOne(ctx, batch[0])
		return out
	}
	for start := 0; start < len(batch); start += h.maxBatch {
		end := min(start+h.maxBatch, len(batch))
		h.submitChunk(ctx, batch[start:end], out[start:end])
	}
	return out
}

// wireMessage is one submission as the sandbox protocol spells it.
type wireMessage struct {
	Reference      string `json:"reference"`
	Attempt        int    `json:"attempt"`
	To             string `json:"to"`
	From           string `json:"from"`
	Body           string `json:"body"`
	Segments       int    `json:"segments"`
	IdempotencyKey string `json:"idempotency_key,omitempty"` // batch items only
}

type wireAccepted struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Reference string `json:"reference"`
	Attempt   int    `json:"attempt"`
}

type wireError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable *bool  `json:"retryable"`
}

type wireBatchResult struct {
	Reference string     `json:"reference"`
	Attempt   int        `json:"attempt"`
	Status    string     `json:"status"`
	ID        string     `json:"id"`
	Error     *wireError `json:"error"`
}

func toWire(s Submission) wireMessage {
	return wireMessage{Reference: s.MessageID, Attempt: s.Attempt, To: s.To, From: s.From, Body: s.Body, Segments: s.Segments}
}

func (h *HTTP) submitOne(ctx context.Context, s Submission) Outcome {
	ans, fail := h.post(ctx, h.oneURL, s.IdempotencyKey(), toWire(s), maxSingleAnswer)
	if fail != nil {
		return Outcome{Err: fail}
	}
	if ans.status/100 != 2 {
		return Outcome{Err: h.refusal(ans)}
	}
	var acc wireAccepted
	if err := json.Unmarshal(ans.body, &acc); err != nil {
		return Outcome{Err: malformedError(h.name, ans.status, err.Error())}
	}
	if acc.Status != "accepted" || acc.ID == "" || acc.Reference != s.MessageID || acc.Attempt != s.Attempt {
		return Outcome{Err: malformedError(h.name, ans.status, fmt.Sprintf("acceptance %+v does not match %s", acc, s.IdempotencyKey()))}
	}
	return Outcome{Result: Result{
		ProviderMessageID: acc.ID,
		Latency:           ans.latency,
		Replayed:          ans.header.Get("Idempotent-Replayed") == "true",
	}}
}

func (h *HTTP) submitChunk(ctx context.Context, chunk []Submission, out []Outcome) {
	msgs := make([]wireMessage, len(chunk))
	for i, s := range chunk {
		msgs[i] = toWire(s)
		msgs[i].IdempotencyKey = s.IdempotencyKey()
	}
	limit := int64(maxSingleAnswer + maxAnswerPerItem*len(chunk))
	ans, fail := h.post(ctx, h.batchURL, "", struct {
		Messages []wireMessage `json:"messages"`
	}{msgs}, limit)
	// A failure of the whole request is every item's failure; each gets its
	// own *Error so that a caller annotating one does not change the others.
	each := func(mk func() *Error) {
		for i := range out {
			out[i] = Outcome{Err: mk()}
		}
	}
	switch {
	case fail != nil:
		each(func() *Error { e := *fail; return &e })
		return
	case ans.status/100 != 2:
		each(func() *Error { return h.refusal(ans) })
		return
	}
	var body struct {
		Results []wireBatchResult `json:"results"`
	}
	if err := json.Unmarshal(ans.body, &body); err != nil || len(body.Results) != len(chunk) {
		what := fmt.Sprintf("%d results for %d submissions", len(body.Results), len(chunk))
		if err != nil {
			what = err.Error()
		}
		each(func() *Error { return malformedError(h.name, ans.status, what) })
		return
	}
	for i, r := range body.Results {
		out[i] = h.itemOutcome(chunk[i], r, ans.latency)
	}
}

func (h *HTTP) itemOutcome(s Submission, r wireBatchResult, latency time.Duration) Outcome {
	if r.Reference != s.MessageID || r.Attempt != s.Attempt {
		return Outcome{Err: malformedError(h.name, 0, fmt.Sprintf("result for %s:%d in the place of %s", r.Reference, r.Attempt, s.IdempotencyKey()))}
	}
	switch r.Status {
	case "accepted":
		if r.ID == "" {
			return Outcome{Err: malformedError(h.name, 0, "accepted without an id for "+s.IdempotencyKey())}
		}
		return Outcome{Result: Result{ProviderMessageID: r.ID, Latency: latency}}
	case "failed":
		var e wireError
		if r.Error != nil {
			e = *r.Error
		}
		return Outcome{Err: answerError(h.name, 0, e.Code, e.Message, e.Retryable, 0)}
	}
	return Outcome{Err: malformedError(h.name, 0, fmt.Sprintf("status %q for %s", r.Status, s.IdempotencyKey()))}
}

// answer is a response read in full (up to its limit).
type answer struct {
	status  int
	header  http.Header
	body    []byte
	latency time.Duration
}

// refusal turns a non-2xx answer into its Error via the classify table.
func (h *HTTP) refusal(ans answer) *Error {
	var body struct {
		Error wireError `json:"error"`
	}
	_ = json.Unmarshal(ans.body, &body) // an unreadable body leaves the status to decide
	retryAfter := parseRetryAfter(ans.header.Get("Retry-After"), time.Now())
	return answerError(h.name, ans.status, body.Error.Code, body.Error.Message, nil, retryAfter)
}

// post sends one JSON request under its own timeout and reads the answer,
// refusing bodies over limit.
func (h *HTTP) post(ctx context.Context, target, idempotencyKey string, payload any, limit int64) (answer, *Error) {
	data, err := json.Marshal(payload)
	if err != nil {
		// Only unencodable strings could get here; no request was sent.
		return answer{}, malformedError(h.name, 0, "encoding the request: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(data))
	if err != nil {
		return answer{}, transportError(h.name, err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.apiKey)
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	start := time.Now()
	resp, err := h.client.Do(req)
	if err != nil {
		return answer{}, transportError(h.name, err)
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxDrain))
		_ = resp.Body.Close()
	}()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return answer{}, transportError(h.name, err)
	}
	if int64(len(body)) > limit {
		return answer{}, malformedError(h.name, resp.StatusCode, fmt.Sprintf("answer larger than %d bytes", limit))
	}
	return answer{status: resp.StatusCode, header: resp.Header, body: body, latency: time.Since(start)}, nil
}
