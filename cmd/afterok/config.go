package main

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/afterok/afterok/domain/pricing"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/callbacks"
)

// Config is afterok's configuration, loaded once from the environment. The
// defaults make `afterok dev` work on a laptop with PostgreSQL on
// localhost; README.md documents every field.
type Config struct {
	DatabaseURL string     // DATABASE_URL
	DBMaxConns  int32      // AFTEROK_DB_MAX_CONNS
	LogLevel    slog.Level // AFTEROK_LOG_LEVEL: debug, info, warn, error
	LogFormat   string     // AFTEROK_LOG_FORMAT: text (slog's key=value) or json (one object a line)
	// StatementTimeout and IdleInTxTimeout bound how long a writer can hold
	// back the event tail (AFTEROK_STATEMENT_TIMEOUT, AFTEROK_IDLE_IN_TX_TIMEOUT).
	StatementTimeout time.Duration
	IdleInTxTimeout  time.Duration

	Addr    string // AFTEROK_ADDR: the API
	SimAddr string // AFTEROK_SIM_ADDR: the provider simulator
	DataDir string // AFTEROK_DATA_DIR: embedded NATS data, dev credentials
	NATSURL string // NATS_URL: empty runs an embedded JetStream server
	Prefix  string // AFTEROK_PREFIX: JetStream stream and subject prefix
	// NATSSyncAlways fsyncs every JetStream write (AFTEROK_NATS_SYNC_ALWAYS).
	NATSSyncAlways bool
	// NATSDuplicates is the streams' Nats-Msg-Id deduplication window
	// (AFTEROK_NATS_DUPLICATE_WINDOW).
	NATSDuplicates time.Duration
	// NATSEventsMaxBytes bounds the events stream (AFTEROK_NATS_EVENTS_MAX_BYTES).
	NATSEventsMaxBytes int64
	// NATSReplicas is how many JetStream servers hold each stream and its
	// consumers (AFTEROK_NATS_REPLICAS): 3 on a cluster of three or more
	// rides out the loss of one; the embedded server is one node.
	NATSReplicas int

	MaxMessages    int           // AFTEROK_MAX_MESSAGES: per order
	RateLimit      float64       // AFTEROK_RATE_LIMIT: requests/s per account
	RateBurst      int           // AFTEROK_RATE_BURST
	IdempotencyTTL time.Duration // AFTEROK_IDEMPOTENCY_TTL
	// MaxStreamsPerAccount bounds an account's open event streams in one
	// process (AFTEROK_MAX_STREAMS_PER_ACCOUNT).
	MaxStreamsPerAccount int
	// BodyBudget bounds the bytes of request bodies read at once
	// (AFTEROK_BODY_BUDGET); BodyMinRate and BodyGrace time each body
	// (AFTEROK_BODY_MIN_RATE in bytes/s, AFTEROK_BODY_GRACE).
	BodyBudget  int64
	BodyMinRate int64
	BodyGrace   time.Duration

	Retry routing.RetryPolicy // AFTEROK_MAX_ATTEMPTS, AFTEROK_RETRY_BASE, AFTEROK_RETRY_MAX

	DispatchBatch    int           // AFTEROK_DISPATCH_BATCH: jobs per worker batch
	DispatchFetchers int           // AFTEROK_DISPATCH_FETCHERS: concurrent batches
	DispatchAckWait  time.Duration // AFTEROK_DISPATCH_ACK_WAIT: how long a taken job waits before redelivery

	// Partitions is how many partitions every tail consumer (scheduler,
	// tracker, each projection, the webhooks fan-out) is split into
	// (AFTEROK_PARTITIONS): how many processes of a role can share its
	// work. Fixed per deployment.
	Partitions int
	// TailCache is how many of the tail's newest events a process keeps in
	// memory for its tail consumers (AFTEROK_TAIL_CACHE; 0: none, each
	// consumer reads PostgreSQL itself).
	TailCache int

	// The stranded-message check (handlers/workers/scheduler): a queued or
	// routed message whose job left the work queue without an outcome is
	// queued again once its job is StrandedAfter old; the check runs every
	// StrandedEvery.
	StrandedAfter time.Duration // AFTEROK_STRANDED_AFTER
	StrandedEvery time.Duration // AFTEROK_STRANDED_EVERY

	Prices    *pricing.Table   // AFTEROK_PRICES_FILE (JSON), default pricing.Default()
	Routes    *routing.Table   // AFTEROK_ROUTES_FILE (JSON), default routing.DefaultTable()
	Providers []ProviderConfig // AFTEROK_PROVIDERS_FILE (JSON), default: the simulator's sim-a and sim-b

	// PprofAddr serves net/http/pprof when set (AFTEROK_PPROF_ADDR), for
	// profiling under load; never on a public address.
	PprofAddr string

	// Status callbacks (handlers/workers/callbacks, the webhooks role).
	WebhookAllowPrivate    bool            // AFTEROK_WEBHOOK_ALLOW_PRIVATE: allow loopback/private targets and http (dev sets it)
	WebhookRetrySchedule   []time.Duration // AFTEROK_WEBHOOK_RETRY_SCHEDULE: pauses after each failed attempt
	WebhookDisableAfter    time.Duration   // AFTEROK_WEBHOOK_DISABLE_AFTER: every attempt failed this long → disabled
	WebhookConcurrency     int             // AFTEROK_WEBHOOK_CONCURRENCY: requests in flight per endpoint
	WebhookAttemptsKeep    time.Duration   // AFTEROK_WEBHOOK_ATTEMPTS_KEEP: attempt-log retention
	WebhookRotationOverlap time.Duration   // AFTEROK_WEBHOOK_ROTATION_OVERLAP: a rotated-out secret keeps signing this long
	WebhookLease           time.Duration   // AFTEROK_WEBHOOK_LEASE: a claimed delivery is due again after this (a dead process's)
	WebhookDirectBudget    time.Duration   // AFTEROK_WEBHOOK_DIRECT_BUDGET: how long the fan-out sends a batch itself; 0: never

	SimSubmitLatency time.Duration // AFTEROK_SIM_SUBMIT_LATENCY
	SimReceiptDelay  time.Duration // AFTEROK_SIM_RECEIPT_DELAY
	// SimReceiptMaxAge is how long the simulator retries a refused receipt
	// callback, as a real provider keeps retrying delivery reports.
	SimReceiptMaxAge time.Duration // AFTEROK_SIM_RECEIPT_MAX_AGE
}

// ProviderConfig is one provider afterok submits to.
type ProviderConfig struct {
	Name    string   `json:"name"`
	URL     string   `json:"url"`     // API root; requests go to {url}/{name}/v1/messages
	APIKey  string   `json:"api_key"` // bearer token for submissions
	Secret  string   `json:"secret"`  // HMAC secret its receipts are signed with
	Timeout Duration `json:"timeout"` // per request; default 10 s
}

// Duration is a time.Duration that reads "10s" in JSON.
type Duration time.Duration

// UnmarshalJSON parses a Go duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.ParseDuration(s)
	*d = Duration(v)
	return err
}

// LoadConfig reads the configuration through getenv.
func LoadConfig(getenv func(string) string) (Config, error) {
	c := Config{
		DatabaseURL:        "postgres://localhost:5432/afterok?sslmode=disable",
		DBMaxConns:         32,
		LogLevel:           slog.LevelInfo,
		LogFormat:          "text",
		StatementTimeout:   60 * time.Second,
		IdleInTxTimeout:    15 * time.Second,
		Addr:               "127.0.0.1:8080",
		SimAddr:            "127.0.0.1:8090",
		DataDir:            "./var",
		Prefix:             "afterok",
		MaxMessages:        100_000,
		RateLimit:          100,
		RateBurst:          200,
		IdempotencyTTL:     24 * time.Hour,
		Retry:              routing.DefaultRetryPolicy(),
		NATSDuplicates:     bus.DefaultDuplicates,
		NATSEventsMaxBytes: bus.DefaultEventsMaxBytes,
		NATSReplicas:       1,
		DispatchBatch:      200,
		DispatchFetchers:   2,
		DispatchAckWait:    30 * time.Second,
		Partitions:         eventstore.DefaultPartitions,
		TailCache:          eventstore.DefaultTailCache,
		StrandedAfter:      2 * time.Minute,
		StrandedEvery:      15 * time.Second,
		Prices:             pricing.Default(),
		Routes:             routing.DefaultTable(),
		SimSubmitLatency:   20 * time.Millisecond,
		SimReceiptDelay:    200 * time.Millisecond,
		SimReceiptMaxAge:   6 * time.Hour,
	}
	c.WebhookRetrySchedule, c.WebhookDisableAfter, c.WebhookConcurrency = callbacks.DefaultSchedule, 120*time.Hour, 16
	c.WebhookAttemptsKeep, c.WebhookRotationOverlap, c.WebhookLease = 30*24*time.Hour, 24*time.Hour, 2*time.Minute
	c.WebhookDirectBudget = 2 * time.Second
	// The readers' and bodies' limits (handlers/edge/api documents why).
	c.MaxStreamsPerAccount, c.BodyBudget, c.BodyMinRate, c.BodyGrace = 20, 128<<20, 16<<10, 10*time.Second
	p := parser{getenv: getenv}
	p.str("DATABASE_URL", &c.DatabaseURL)
	p.int32("AFTEROK_DB_MAX_CONNS", &c.DBMaxConns, 2, 1000)
	if v := getenv("AFTEROK_LOG_LEVEL"); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			p.errs = append(p.errs, fmt.Errorf("AFTEROK_LOG_LEVEL=%q: want debug, info, warn or error", v))
		}
	}
	p.str("AFTEROK_LOG_FORMAT", &c.LogFormat)
	if c.LogFormat != "text" && c.LogFormat != "json" {
		p.errs = append(p.errs, fmt.Errorf("AFTEROK_LOG_FORMAT=%q: want text or json", c.LogFormat))
	}
	p.dur("AFTEROK_STATEMENT_TIMEOUT", &c.StatementTimeout)
	p.dur("AFTEROK_IDLE_IN_TX_TIMEOUT", &c.IdleInTxTimeout)
	p.str("AFTEROK_ADDR", &c.Addr)
	p.str("AFTEROK_SIM_ADDR", &c.SimAddr)
	p.str("AFTEROK_DATA_DIR", &c.DataDir)
	p.str("NATS_URL", &c.NATSURL)
	p.str("AFTEROK_PREFIX", &c.Prefix)
	p.str("AFTEROK_PPROF_ADDR", &c.PprofAddr)
	p.boolean("AFTEROK_NATS_SYNC_ALWAYS", &c.NATSSyncAlways)
	p.dur("AFTEROK_NATS_DUPLICATE_WINDOW", &c.NATSDuplicates)
	p.int64("AFTEROK_NATS_EVENTS_MAX_BYTES", &c.NATSEventsMaxBytes, 1<<20, 1<<50)
	p.int("AFTEROK_NATS_REPLICAS", &c.NATSReplicas, 1, 5) // JetStream's own maximum
	if c.NATSReplicas > 1 && c.NATSURL == "" {
		p.errs = append(p.errs, fmt.Errorf("AFTEROK_NATS_REPLICAS=%d needs NATS_URL naming a JetStream cluster: the embedded server is one node", c.NATSReplicas))
	}
	p.int("AFTEROK_MAX_MESSAGES", &c.MaxMessages, 1, 1_000_000)
	p.float("AFTEROK_RATE_LIMIT", &c.RateLimit)
	p.int("AFTEROK_RATE_BURST", &c.RateBurst, 1, 1_000_000)
	p.dur("AFTEROK_IDEMPOTENCY_TTL", &c.IdempotencyTTL)
	p.int("AFTEROK_MAX_STREAMS_PER_ACCOUNT", &c.MaxStreamsPerAccount, 1, 100_000)
	p.int64("AFTEROK_BODY_BUDGET", &c.BodyBudget, 1<<20, 1<<40)
	p.int64("AFTEROK_BODY_MIN_RATE", &c.BodyMinRate, 1, 1<<30)
	p.dur("AFTEROK_BODY_GRACE", &c.BodyGrace)
	p.int("AFTEROK_MAX_ATTEMPTS", &c.Retry.MaxAttempts, 1, 100)
	p.dur("AFTEROK_RETRY_BASE", &c.Retry.Base)
	p.dur("AFTEROK_RETRY_MAX", &c.Retry.Max)
	p.int("AFTEROK_DISPATCH_BATCH", &c.DispatchBatch, 1, 1000)
	p.int("AFTEROK_DISPATCH_FETCHERS", &c.DispatchFetchers, 1, 64)
	p.int("AFTEROK_PARTITIONS", &c.Partitions, 1, 1024)
	p.int("AFTEROK_TAIL_CACHE", &c.TailCache, 0, 1<<20)
	p.dur("AFTEROK_DISPATCH_ACK_WAIT", &c.DispatchAckWait)
	p.dur("AFTEROK_SIM_SUBMIT_LATENCY", &c.SimSubmitLatency)
	p.dur("AFTEROK_SIM_RECEIPT_DELAY", &c.SimReceiptDelay)
	p.dur("AFTEROK_SIM_RECEIPT_MAX_AGE", &c.SimReceiptMaxAge)
	p.dur("AFTEROK_STRANDED_AFTER", &c.StrandedAfter)
	p.dur("AFTEROK_STRANDED_EVERY", &c.StrandedEvery)
	p.boolean("AFTEROK_WEBHOOK_ALLOW_PRIVATE", &c.WebhookAllowPrivate)
	p.durations("AFTEROK_WEBHOOK_RETRY_SCHEDULE", &c.WebhookRetrySchedule)
	p.dur("AFTEROK_WEBHOOK_DISABLE_AFTER", &c.WebhookDisableAfter)
	p.int("AFTEROK_WEBHOOK_CONCURRENCY", &c.WebhookConcurrency, 1, 1024)
	p.dur("AFTEROK_WEBHOOK_ATTEMPTS_KEEP", &c.WebhookAttemptsKeep)
	p.dur("AFTEROK_WEBHOOK_ROTATION_OVERLAP", &c.WebhookRotationOverlap)
	p.dur("AFTEROK_WEBHOOK_LEASE", &c.WebhookLease)
	if c.WebhookLease <= callbacks.DefaultTimeout {
		p.errs = append(p.errs, fmt.Errorf("AFTEROK_WEBHOOK_LEASE=%s: must be longer than a callback request's timeout (%s), "+
			"or a claim expires while its request is still out and another process sends the callback again", c.WebhookLease, callbacks.DefaultTimeout))
	}
	p.dur("AFTEROK_WEBHOOK_DIRECT_BUDGET", &c.WebhookDirectBudget)
	if c.WebhookDirectBudget > callbacks.MaxDirectBudget {
		p.errs = append(p.errs, fmt.Errorf("AFTEROK_WEBHOOK_DIRECT_BUDGET=%s: from 0 (never) to %s", c.WebhookDirectBudget, callbacks.MaxDirectBudget))
	}
	if b := p.file("AFTEROK_PRICES_FILE"); b != nil {
		t, err := pricing.Parse(b)
		p.check("AFTEROK_PRICES_FILE", err)
		c.Prices = t
	}
	if b := p.file("AFTEROK_ROUTES_FILE"); b != nil {
		t, err := routing.Parse(b)
		p.check("AFTEROK_ROUTES_FILE", err)
		c.Routes = t
	}
	if b := p.file("AFTEROK_PROVIDERS_FILE"); b != nil {
		var f struct {
			Providers []ProviderConfig `json:"providers"`
		}
		p.check("AFTEROK_PROVIDERS_FILE", json.Unmarshal(b, &f))
		c.Providers = f.Providers
	} else {
		c.Providers = simProviders("http://" + c.SimAddr)
	}
	p.check("retry policy", c.Retry.Validate())
	if len(p.errs) > 0 {
		return c, fmt.Errorf("configuration: %v", p.errs)
	}
	return c, nil
}

// simProviders are the simulator's two providers, as afterok dev uses them.
func simProviders(base string) []ProviderConfig {
	var out []ProviderConfig
	for _, name := range []string{"sim-a", "sim-b"} {
		pc := sim.DefaultConfig().Providers[name]
		out = append(out, ProviderConfig{Name: name, URL: base, APIKey: pc.APIKey, Secret: pc.Secret, Timeout: Duration(10 * time.Second)})
	}
	return out
}

type parser struct {
	getenv func(string) string
	errs   []error
}

func (p *parser) str(key string, dst *string) {
	if v := p.getenv(key); v != "" {
		*dst = v
	}
}

func (p *parser) dur(key string, dst *time.Duration) {
	if v := p.getenv(key); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want a duration like 15s", key, v))
			return
		}
		*dst = d
	}
}

// durations reads a comma-separated list of positive durations.
func (p *parser) durations(key string, dst *[]time.Duration) {
	v := p.getenv(key)
	if v == "" {
		return
	}
	var out []time.Duration
	for _, part := range splitList(v, false) {
		d, err := time.ParseDuration(part)
		if err != nil || d <= 0 {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want positive durations separated by commas, like 5s,5m,30m", key, v))
			return
		}
		out = append(out, d)
	}
	*dst = out
}

func (p *parser) int64(key string, dst *int64, lo, hi int64) {
	if v := p.getenv(key); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < lo || n > hi {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want a number from %d to %d", key, v, lo, hi))
			return
		}
		*dst = n
	}
}

func (p *parser) int(key string, dst *int, lo, hi int) {
	if v := p.getenv(key); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want a number from %d to %d", key, v, lo, hi))
			return
		}
		*dst = n
	}
}

func (p *parser) int32(key string, dst *int32, lo, hi int) {
	n := int(*dst)
	p.int(key, &n, lo, hi)
	*dst = int32(n)
}

func (p *parser) float(key string, dst *float64) {
	if v := p.getenv(key); v != "" {
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f <= 0 {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want a positive number", key, v))
			return
		}
		*dst = f
	}
}

func (p *parser) boolean(key string, dst *bool) {
	if v := p.getenv(key); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			p.errs = append(p.errs, fmt.Errorf("%s=%q: want true or false", key, v))
			return
		}
		*dst = b
	}
}

func (p *parser) file(key string) []byte {
	path := p.getenv(key)
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s: %w", key, err))
		return nil
	}
	return b
}

func (p *parser) check(what string, err error) {
	if err != nil {
		p.errs = append(p.errs, fmt.Errorf("%s: %w", what, err))
	}
}
