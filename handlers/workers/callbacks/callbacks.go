// Package callbacks delivers status callbacks (webhooks, README "Status callbacks"):
// it follows the store, matches each event to its account's enabled
// endpoints by type, and POSTs it, signed, to each, retrying on the
// configured schedule.
//
// Delivery state is in PostgreSQL, so a crash at any point loses nothing
// and forgets no retry (at-least-once; a receiver deduplicates on
// webhook-id, the event id):
//
//   - The fan-out is a tail consumer: the deliveries of a batch are
//     inserted in one statement, in the consumer's transaction, so they
//     commit with its checkpoint: each event is fanned out exactly once.
//   - The sender claims due deliveries by moving their next_attempt_at one
//     lease ahead; a process that dies mid-send leaves them due again
//     after the lease, with the same attempt number.
//   - An attempt's log row and its delivery's new state (deleted when
//     done, rescheduled when not) are written in one statement, batched
//     across attempts.
//
// For one endpoint, one stream's events go in version order: a delivery
// is claimed only when no earlier delivery of its (endpoint, stream) is
// still owed. A slow or dead endpoint holds back only itself: each has a
// bounded number of requests in flight and a circuit breaker, and a full
// endpoint is left out of the claim.
package callbacks

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// DefaultSchedule is the contract's retry schedule: the pause after each
// failed attempt; after the last, the delivery is exhausted.
var DefaultSchedule = []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour}

// MaxDirectBudget is the longest DirectBudget (see New).
const MaxDirectBudget = 3 * time.Second

// DefaultTimeout bounds one callback request unless Config.Timeout says
// otherwise. A Lease must be longer: a claim that expires while its
// request is still out is claimed and sent again by another process.
const DefaultTimeout = 10 * time.Second

// Config configures a Deliverer.
type Config struct {
	Store    *eventstore.Store
	Webhooks *webhooks.Service // disables endpoints (410, long failure)
	Guard    webhooks.Guard    // checked again at connect time
	// Schedule is the pause after each failed attempt (default
	// DefaultSchedule, AFTEROK_WEBHOOK_RETRY_SCHEDULE).
	Schedule []time.Duration
	// DisableAfter disables an endpoint whose every attempt failed for
	// this long (default 120 h, AFTEROK_WEBHOOK_DISABLE_AFTER).
	DisableAfter time.Duration
	// Concurrency is how many requests one endpoint has in flight at most
	// (default 16, AFTEROK_WEBHOOK_CONCURRENCY).
	Concurrency int
	// Timeout bounds an attempt (default DefaultTimeout).
	Timeout time.Duration
	// Lease is how long a claimed delivery is held before it is due again
	// (a process that died mid-send; default 2 min).
	Lease time.Duration
	// BreakerThreshold consecutive failures open an endpoint's breaker for
	// BreakerCooldown (doubling while it keeps failing, at most 10 min);
	// defaults 10 and 30 s.
	BreakerThreshold int
	BreakerCooldown  time.Duration
	// Poll is how often the sender looks for due retries when nothing
	// woke it (default 250 ms).
	Poll time.Duration
	// AttemptsKeep is how long the attempt log is kept (default 30 days).
	AttemptsKeep time.Duration
	BatchSize    int // events per fan-out batch and deliveries per claim (default 500)
	// DirectBudget is how long the fan-out may spend sending a batch's
	// callbacks itself (see direct.go; default 2 s, AFTEROK_WEBHOOK_DIRECT_BUDGET);
	// negative: never, every callback goes through a delivery row.
	DirectBudget time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
	Now          func() time.Time
	Hooks        Hooks
}

// Hooks let fault tests stop the deliverer at chosen points.
type Hooks struct {
	// BeforeRecord runs before each batch of attempt results is written:
	// the recorders' and the fan-out's own (direct.go).
	BeforeRecord func(ctx context.Context)
	// Abandon: when the deliverer stops it writes nothing more, as a
	// killed process would (no last results, no release of its claims).
	Abandon bool
}

// recorderCount is how many goroutines write attempt results.
const recorderCount = 2

// Deliverer runs the fan-out and the sender.
type Deliverer struct {
	cfg     Config
	log     *slog.Logger
	client  *http.Client
	metrics *metrics
	wake    chan struct{}
	results chan result

	mu        sync.Mutex
	endpoints map[string]*endpoint
	claimed   map[deliveryKey]time.Time // held, not yet recorded: released on stop

	// waiting are the (webhook, stream) pairs the last fan-out batch left
	// waiting; only the fan-out's goroutine touches it.
	waiting, waitedBefore [][2]string
	// pending is the fan-out's batch sent directly and not yet known to
	// have committed; handing counts its requests handed over and still
	// out; workers counts the goroutines that send claimed deliveries.
	pending *directBatch
	handing sync.WaitGroup
	workers sync.WaitGroup
}

// New returns a Deliverer, or an error naming what cfg lacks.
func New(cfg Config) (*Deliverer, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("callbacks: Config.Store is required")
	case cfg.Webhooks == nil:
		return nil, errors.New("callbacks: Config.Webhooks is required")
	case cfg.Concurrency < 0 || cfg.BatchSize < 0 || cfg.BreakerThreshold < 0:
		return nil, errors.New("callbacks: negative limits")
	}
	for _, d := range cfg.Schedule {
		if d <= 0 {
			return nil, errors.New("callbacks: every pause of the retry schedule must be positive")
		}
	}
	if cfg.Schedule == nil {
		cfg.Schedule = DefaultSchedule
	}
	cfg.DisableAfter = cmp.Or(cfg.DisableAfter, 120*time.Hour)
	cfg.Concurrency = cmp.Or(cfg.Concurrency, 16)
	cfg.Timeout = cmp.Or(cfg.Timeout, DefaultTimeout)
	cfg.Lease = cmp.Or(cfg.Lease, 2*time.Minute)
	cfg.BreakerThreshold = cmp.Or(cfg.BreakerThreshold, 10)
	cfg.BreakerCooldown = cmp.Or(cfg.BreakerCooldown, 30*time.Second)
	cfg.Poll = cmp.Or(cfg.Poll, 250*time.Millisecond)
	cfg.AttemptsKeep = cmp.Or(cfg.AttemptsKeep, 30*24*time.Hour)
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 500)
	// At most 3 s: a batch is held for the budget inside its consumer's
	// step, and a step that outlasts its partitions' lease (6 s, renewed
	// between steps) loses its checkpoint and is sent again.
	cfg.DirectBudget = min(cmp.Or(cfg.DirectBudget, 2*time.Second), MaxDirectBudget)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	d := &Deliverer{cfg: cfg, log: cfg.Logger.With("role", "webhooks"), metrics: newMetrics(cfg.Registerer),
		wake: make(chan struct{}, 1), results: make(chan result, 4096),
		endpoints: map[string]*endpoint{}, claimed: map[deliveryKey]time.Time{}}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second, Control: cfg.Guard.Control}
	d.client = &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:                 nil, // a proxy would dial for us, past the Guard
			DialContext:           dialer.DialContext,
			MaxIdleConnsPerHost:   cfg.Concurrency,
			MaxConnsPerHost:       cfg.Concurrency * 2,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			ForceAttemptHTTP2:     true,
		},
		// Redirects are not followed: the target would escape the
		// address rules, and a callback's answer is the endpoint's own.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return d, nil
}

// Wake tells the sender that deliveries may be due (the fan-out
// committed, an endpoint was enabled, a replay was queued).
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run fans out and sends until ctx ends, then finishes in order: stop
// claiming, let the requests in flight end, write their results, and give
// back what it still holds.
func (d *Deliverer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	fanned := make(chan struct{})
	go func() {
		defer close(fanned)
		_ = d.cfg.Store.Run(ctx, d.fanOut())
	}()
	wg.Add(2)
	go func() {
		defer wg.Done()
		d.runJanitor(ctx, time.Hour)
	}()
	go func() {
		defer wg.Done()
		d.runOrphans(ctx, time.Second)
	}()
	// Two recorders write at once: a flush may wait for the rows it
	// finishes to be free of a fan-out's lock, and meanwhile the other
	// goes on.
	var recorders sync.WaitGroup
	for range recorderCount {
		recorders.Add(1)
		go func() {
			defer recorders.Done()
			d.record(ctx)
		}()
	}
	recorded := make(chan struct{})
	go func() { recorders.Wait(); close(recorded) }()
	d.send(ctx)
	// The fan-out's last batch either committed (its handed-over
	// requests are held now) or did not (they will be sent again); their
	// answers come before the results close, as the claimed ones'.
	<-fanned
	d.decide(false)
	d.handing.Wait()
	d.workers.Wait()
	close(d.results)
	<-recorded
	if !d.cfg.Hooks.Abandon {
		d.release()
	}
	wg.Wait()
	return nil
}
