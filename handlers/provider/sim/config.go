package sim

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"
)

// ProviderConfig is one simulated provider account.
type ProviderConfig struct {
	// APIKey is the bearer token its submissions must carry.
	APIKey string
	// Secret signs the receipts posted for it; the receipt intake verifies
	// them with the same secret.
	Secret string
}

// Config is everything the simulator can be told. Zero values of the fields
// marked "0 means" take a default in New; DefaultConfig fills every field for
// `afterok dev`.
type Config struct {
	// Providers maps a provider name (the first path segment of its API)
	// to its account.
	Providers map[string]ProviderConfig
	// CallbackBase is where receipts go: {CallbackBase}/v1/receipts/{provider}.
	CallbackBase string

	// SubmitLatency ± SubmitJitter (uniform) is how long a submit request
	// waits before it is answered, to give dispatch realistic timings.
	SubmitLatency time.Duration
	SubmitJitter  time.Duration

	// ReceiptDelay is how long after acceptance a receipt is due.
	ReceiptDelay time.Duration
	// ReceiptBatch is the most receipts per callback POST; 0 means 100.
	ReceiptBatch int
	// ReceiptFlush is the longest a due receipt waits for its batch to
	// fill; 0 sends due receipts without waiting.
	ReceiptFlush time.Duration
	// ReceiptRetries, when above 0, is how many times a refused callback is
	// retried before its receipts are given up (and counted in
	// receipts_failed); 0 means no limit by count: ReceiptMaxAge ends it.
	ReceiptRetries int
	// ReceiptMaxAge is how long a refused callback is retried, from its
	// first try, before its receipts are given up. Real providers retry
	// delivery reports for hours, so an outage of the receiving side costs
	// a receipt time, not the message's outcome. 0 means 6 hours.
	ReceiptMaxAge time.Duration
	// ReceiptBackoff is the wait before the first retry, doubled for each
	// further one up to ReceiptMaxBackoff; 0 means 100 ms.
	ReceiptBackoff time.Duration
	// ReceiptMaxBackoff caps the wait between retries; 0 means 10 s. A batch
	// being retried holds one of ReceiptWorkers, so a long outage fills the
	// bounded queue and then holds submissions back: memory stays bounded.
	ReceiptMaxBackoff time.Duration
	// ReceiptTimeout bounds one callback request; 0 means 10 s.
	ReceiptTimeout time.Duration
	// ReceiptQueue is how many accepted messages may wait for their receipt.
	// When it is full, submissions wait for room before they are answered:
	// backpressure instead of dropped receipts. 0 means 50,000.
	ReceiptQueue int
	// ReceiptWorkers is how many callback POSTs may be in flight; 0 means 4.
	ReceiptWorkers int

	// DedupWindow is how long a submission is remembered for idempotent
	// replays, duplicate detection and the …0003 first failure. It is the
	// simulator's only per-message memory, so it bounds it: about 350 bytes
	// per submission inside the window (2 min at 5,000/s ≈ 210 MB, flat
	// after that). A duplicate sent later than the window after the first
	// send goes unnoticed, so it must exceed the longest redelivery delay of
	// the dispatch queue. 0 means 2 minutes.
	DedupWindow time.Duration
	// DrainTimeout bounds how long Run keeps sending queued receipts after
	// its context ends; whatever is still unsent then is counted in
	// receipts_dropped. 0 means 5 s.
	DrainTimeout time.Duration

	// Client posts receipts; nil means a client of the simulator's own.
	Client *http.Client
	// Logger receives the simulator's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultConfig is the configuration `afterok dev` starts with: two providers,
// sim-a and sim-b, with development credentials, answering in about 20 ms and
// delivering 200 ms later.
func DefaultConfig() Config {
	return Config{
		Providers: map[string]ProviderConfig{
			"sim-a": {APIKey: "sim-a-dev-key", Secret: "sim-a-dev-secret"},
			"sim-b": {APIKey: "sim-b-dev-key", Secret: "sim-b-dev-secret"},
		},
		CallbackBase:   "http://127.0.0.1:8080",
		SubmitLatency:  20 * time.Millisecond,
		SubmitJitter:   10 * time.Millisecond,
		ReceiptDelay:   200 * time.Millisecond,
		ReceiptBatch:   100,
		ReceiptFlush:   50 * time.Millisecond,
		ReceiptMaxAge:  6 * time.Hour,
		ReceiptBackoff: 100 * time.Millisecond,
		ReceiptTimeout: 10 * time.Second,
		ReceiptQueue:   50_000,
		ReceiptWorkers: 4,
		DedupWindow:    2 * time.Minute,
		DrainTimeout:   5 * time.Second,
	}
}

// Validate reports a configuration the simulator cannot work with, so that
// the command can refuse to start instead of failing on the first receipt.
func (c Config) Validate() error {
	var errs []error
	if len(c.Providers) == 0 {
		errs = append(errs, errors.New("no providers configured"))
	}
	for name, p := range c.Providers {
		if name == "" || url.PathEscape(name) != name {
			errs = append(errs, fmt.Errorf("provider name %q must be a plain path segment", name))
		}
		if p.APIKey == "" || p.Secret == "" {
			errs = append(errs, fmt.Errorf("provider %q needs an APIKey and a Secret", name))
		}
	}
	if u, err := url.Parse(c.CallbackBase); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("CallbackBase %q is not an http(s) URL", c.CallbackBase))
	}
	for _, d := range []struct {
		name  string
		value time.Duration
	}{{"SubmitLatency", c.SubmitLatency}, {"SubmitJitter", c.SubmitJitter}, {"ReceiptDelay", c.ReceiptDelay}, {"ReceiptFlush", c.ReceiptFlush},
		{"ReceiptMaxAge", c.ReceiptMaxAge}, {"ReceiptBackoff", c.ReceiptBackoff}, {"ReceiptMaxBackoff", c.ReceiptMaxBackoff},
		{"ReceiptTimeout", c.ReceiptTimeout}, {"DedupWindow", c.DedupWindow}, {"DrainTimeout", c.DrainTimeout}} {
		if d.value < 0 {
			errs = append(errs, fmt.Errorf("%s must not be negative", d.name))
		}
	}
	if c.ReceiptRetries < 0 || c.ReceiptBatch < 0 || c.ReceiptQueue < 0 || c.ReceiptWorkers < 0 {
		errs = append(errs, errors.New("counts must not be negative"))
	}
	return errors.Join(errs...)
}

func (c Config) withDefaults() Config {
	c.ReceiptBatch = cmp.Or(c.ReceiptBatch, 100)
	c.ReceiptMaxAge = cmp.Or(c.ReceiptMaxAge, 6*time.Hour)
	c.ReceiptBackoff = cmp.Or(c.ReceiptBackoff, 100*time.Millisecond)
	c.ReceiptMaxBackoff = cmp.Or(c.ReceiptMaxBackoff, 10*time.Second)
	c.ReceiptTimeout = cmp.Or(c.ReceiptTimeout, 10*time.Second)
	c.ReceiptQueue = cmp.Or(c.ReceiptQueue, 50_000)
	c.ReceiptWorkers = cmp.Or(c.ReceiptWorkers, 4)
	c.DedupWindow = cmp.Or(c.DedupWindow, 2*time.Minute)
	c.DrainTimeout = cmp.Or(c.DrainTimeout, 5*time.Second)
	if c.Client == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = c.ReceiptWorkers * 2
		c.Client = &http.Client{Transport: t}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
