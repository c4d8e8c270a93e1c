package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/afterok/afterok/eventstore"
)

// Config configures a Runner. The zero value runs every projection.
type Config struct {
	Store *eventstore.Store
	// Projections names the projections to run (default: all).
	Projections []string
	// BatchSize is the most events applied per transaction (default 1,000).
	BatchSize int
	// Poll is how long an idle projection waits for appends made by other
	// processes; appends in this process wake it at once (default 100 ms).
	Poll time.Duration
	// Partitions is how many partitions each projection runs as (default:
	// the store's).
	Partitions int
	// LagInterval is how often the lag gauges are sampled (default 1 s).
	LagInterval time.Duration
	// Registerer receives the runner's metrics (default: a private
	// registry).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock lag is measured with (default time.Now).
	Now func() time.Time
}

// Runner keeps the read models current: one consumer of the store's
// gap-safe tail per projection, each applying its batch and moving its
// checkpoint in one transaction.
type Runner struct {
	store       *eventstore.Store
	cfg         Config
	projections []Projection
	metrics     *runnerMetrics
	log         *slog.Logger
}

// NewRunner returns a Runner over cfg.Store, or an error naming what cfg
// lacks.
func NewRunner(cfg Config) (*Runner, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("projections: Config.Store is required")
	case cfg.BatchSize < 0 || cfg.Poll < 0 || cfg.LagInterval < 0:
		return nil, errors.New("projections: Config.BatchSize, Poll and LagInterval must not be negative")
	}
	store := cfg.Store
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 1000)
	cfg.Poll = cmp.Or(cfg.Poll, 100*time.Millisecond)
	cfg.LagInterval = cmp.Or(cfg.LagInterval, time.Second)
	if cfg.Registerer == nil { // not cmp.Or: it would build a registry every time
		cfg.Registerer = prometheus.NewRegistry()
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.Now == nil { // a func is not comparable, so not cmp.Or's
		cfg.Now = time.Now
	}
	ps := All()
	if len(cfg.Projections) > 0 {
		ps = ps[:0]
		for _, n := range cfg.Projections {
			p, err := Lookup(n)
			if err != nil {
				return nil, err
			}
			ps = append(ps, p)
		}
	}
	m, err := newRunnerMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	if err := cfg.Registerer.Register(newStateGauge(store.Pool(), cfg.Logger, 10*time.Second)); err != nil {
		return nil, fmt.Errorf("projection metrics: %w", err)
	}
	return &Runner{store: store, cfg: cfg, projections: ps, metrics: m, log: cfg.Logger}, nil
}

// Run follows the tail until ctx ends. Its goroutines (one per projection
// and the lag sampler) stop with ctx and are waited for before Run returns.
func (r *Runner) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for _, p := range r.projections {
		g.Go(func() error { r.follow(ctx, p); return nil })
	}
	g.Go(func() error { r.sampleLag(ctx); return nil })
	_ = g.Wait()
	return ctx.Err()
}

// follow runs the projection's consumer (eventstore.Store.Run: this
// process's share of its partitions) with the runner's metrics, counted
// once a batch has committed.
func (r *Runner) follow(ctx context.Context, p Projection) {
	log := r.log.With("projection", p.Name)
	var applied result
	var start time.Time
	c := eventstore.Consumer{
		Name: p.Checkpoint(), Filter: eventstore.Filter{Types: p.Types, Sparse: p.Sparse},
		PartitionKey: p.PartitionKey, Partitions: r.cfg.Partitions,
		BatchSize: r.cfg.BatchSize, Poll: r.cfg.Poll, Logger: log,
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			start = time.Now()
			res, err := p.applyLocked(ctx, tx.Tx, batch)
			applied = res
			return err
		},
		Committed: func(batch []eventstore.RecordedEvent) {
			now := r.cfg.Now()
			r.metrics.applied.WithLabelValues(p.Name).Add(float64(len(batch)))
			r.metrics.batch.WithLabelValues(p.Name).Observe(time.Since(start).Seconds())
			delay := r.metrics.delay.WithLabelValues(p.Name)
			for _, e := range batch {
				delay.Observe(now.Sub(e.RecordedAt).Seconds())
			}
			r.metrics.outcomes.observe(applied.finished) // committed: counted once
			if len(applied.refused) > 0 {
				r.metrics.refused.WithLabelValues(p.Name).Add(float64(len(applied.refused)))
				applied.log(log, p.Name)
			}
		},
	}
	_ = r.store.Run(ctx, c)
}

func (r *Runner) sampleLag(ctx context.Context) {
	t := time.NewTicker(r.cfg.LagInterval)
	defer t.Stop()
	for {
		st, err := statusesOf(ctx, r.store.Pool(), r.projections, r.cfg.Now())
		if err != nil && ctx.Err() == nil {
			r.log.Warn("projection lag sample failed", "err", err)
		}
		for _, s := range st {
			r.metrics.lagEvents.WithLabelValues(s.Name).Set(float64(s.EventsBehind))
			r.metrics.lagSeconds.WithLabelValues(s.Name).Set(s.SecondsBehind)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type runnerMetrics struct {
	applied, refused      *prometheus.CounterVec
	batch, delay          *prometheus.HistogramVec
	lagEvents, lagSeconds *prometheus.GaugeVec
	outcomes              *outcomeMetrics
}

// newRunnerMetrics registers the runner's series. The only label is the
// projection's name: a handful of values.
func newRunnerMetrics(reg prometheus.Registerer) (*runnerMetrics, error) {
	m := &runnerMetrics{
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_projection_events_applied_total",
			Help: "Events applied to read models (committed with the checkpoint)."}, []string{"projection"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_projection_events_refused_total",
			Help: "Events a projection skipped because the domain would not fold them; each is logged."}, []string{"projection"}),
		batch: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "afterok_projection_batch_duration_seconds",
			Help: "Time to read, apply and commit one batch.", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 10)},
			[]string{"projection"}),
		delay: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "afterok_projection_delay_seconds",
			Help:    "Per event, from its append (recorded_at) to the commit that applied it: the read model's lag as clients feel it.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}}, []string{"projection"}),
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "afterok_projection_lag_events",
			Help: fmt.Sprintf("Committed events a projection has yet to apply (counted up to %d).", MaxBehindCounted)},
			[]string{"projection"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "afterok_projection_lag_seconds",
			Help: "Age of the oldest committed event a projection has yet to apply."}, []string{"projection"}),
	}
	m.outcomes = newOutcomeMetrics()
	for _, c := range append([]prometheus.Collector{m.applied, m.refused, m.batch, m.delay, m.lagEvents, m.lagSeconds}, m.outcomes.collectors()...) {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("projection metrics: %w", err)
		}
	}
	return m, nil
}

// MaintainedTables are the read models eventstore.Maintain should look
// after: their rows are rewritten as every message moves on.
var MaintainedTables = []eventstore.Table{
	{Name: "read_messages", Every: 30 * time.Second},
	{Name: "read_orders", Every: 30 * time.Second},
}
