package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/commands/webhooks"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/console"
	"github.com/afterok/afterok/handlers/edge/receipts"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/callbacks"
	"github.com/afterok/afterok/handlers/workers/dispatch"
	"github.com/afterok/afterok/handlers/workers/scheduler"
	"github.com/afterok/afterok/handlers/workers/tracker"
	"github.com/afterok/afterok/projections"
)

// The roles a process can run (`afterok serve --roles`).
const (
	roleAPI       = "api"       // the HTTP API (orders, reads, health, metrics)
	roleReceipts  = "receipts"  // delivery-receipt intake, mounted on the API server
	roleRelay     = "relay"     // store → JetStream events stream
	roleScheduler = "scheduler" // accepted/retried → dispatch jobs; expiry
	roleDispatch  = "dispatch"  // workers: route and submit
	roleTracker   = "tracker"   // settle final messages, complete orders
	roleProject   = "project"   // read-model projectors
	roleSim       = "sim"       // the provider simulator (dev)
	roleWebhooks  = "webhooks"  // status callbacks: fan-out and delivery
)

var allRoles = []string{roleAPI, roleReceipts, roleRelay, roleScheduler, roleDispatch, roleTracker, roleProject, roleWebhooks}

func parseRoles(s string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, r := range splitList(s, false) {
		if r == "all" {
			for _, a := range allRoles {
				out[a] = true
			}
			continue
		}
		valid := r == roleSim
		for _, a := range allRoles {
			valid = valid || r == a
		}
		if !valid {
			return nil, fmt.Errorf("%w: unknown role %q (roles: %s, sim, all)", errUsage, r, strings.Join(allRoles, ", "))
		}
		out[r] = true
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no roles", errUsage)
	}
	return out, nil
}

// system is one afterok process: the connections and the roles it runs.
//
// Its life has three steps, each done for every role before the next
// begins: start builds every role (a bad configuration fails here, before
// any port is open), listen binds the ports, and Run runs the roles and
// stops them in the reverse order of the stages they were started in.
type system struct {
	env      *environment
	cfg      Config
	roles    map[string]bool
	pool     *pgxpool.Pool
	store    *eventstore.Store
	registry *prometheus.Registry

	embedded *bus.Embedded
	nc       *nats.Conn
	js       jetstream.JetStream
	names    bus.Names

	accounts  *accounts.Service
	webhooks  *webhooks.Service
	acceptor  *orders.Acceptor
	intake    *receipts.Intake
	simulator *sim.Simulator
	api       *api.Server

	simSrv, pprofSrv   *http.Server
	apiL, simL, pprofL net.Listener
	apiAddr, simAddr   string
	stages             [stageCount][]task
	hooks              dispatch.Hooks // fault tests stop workers at chosen points
}

// The stages roles start in, in this order; they stop in the reverse one.
// Producers stop first (no new submissions), then the simulator delivers
// the receipts it owes, then the API stops taking requests and commits
// the orders in hand, and only then do the followers (relay, tracker,
// projections) stop, after everything they follow has been written.
const (
	stageFollowers = iota
	stageAPI
	stageSim
	stageProducers
	stageCount
)

// task is one goroutine of a role; it runs until its context ends.
type task struct {
	name string
	run  func(context.Context) error
}

func (s *system) add(stage int, name string, run func(context.Context) error) {
	s.stages[stage] = append(s.stages[stage], task{name: name, run: run})
}

// start connects and builds every component of the selected roles; listen
// then binds the ports and Run runs them. Nothing listens before every role
// is built.
func start(ctx context.Context, env *environment, roles map[string]bool, hooks dispatch.Hooks) (*system, error) {
	s := &system{env: env, cfg: env.cfg, roles: roles, registry: prometheus.NewRegistry(),
		names: bus.Names{Prefix: env.cfg.Prefix}, hooks: hooks}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	// The providers first: they need no connection, and a bad URL is the
	// likeliest mistake in a configuration.
	var provs map[string]provider.Provider
	if roles[roleDispatch] {
		var err error
		if provs, err = s.providers(); err != nil {
			return nil, err
		}
	}
	pool, err := connectTraced(ctx, env, strings.Join(sortedRoles(roles), ","), eventstore.NewQueryMetrics(s.registry))
	if err != nil {
		return nil, err
	}
	s.pool, s.store = pool, eventstore.New(pool, eventstore.WithPartitions(s.cfg.Partitions), eventstore.WithTailCache(s.cfg.TailCache),
		eventstore.WithConsumerMetrics(eventstore.NewConsumerMetrics(s.registry)))
	s.accounts = accounts.New(s.store, time.Now, accounts.Currencies(s.cfg.Prices.Currency()), accounts.IdempotencyTTL(s.cfg.IdempotencyTTL))
	s.webhooks = webhooks.New(s.store, webhooks.Config{Guard: webhooks.Guard{AllowPrivate: s.cfg.WebhookAllowPrivate},
		RotationOverlap: s.cfg.WebhookRotationOverlap})
	s.add(stageFollowers, "table maintenance", func(ctx context.Context) error {
		return eventstore.Maintain(ctx, s.pool, maintainedTables(), s.env.log)
	})
	if roles[roleRelay] || roles[roleScheduler] || roles[roleDispatch] {
		if err := s.connectNATS(ctx); err != nil {
			return nil, err
		}
	}
	if roles[roleReceipts] || roles[roleDispatch] {
		secrets := map[string][]byte{}
		for _, p := range s.cfg.Providers {
			secrets[p.Name] = []byte(p.Secret)
		}
		if s.intake, err = receipts.New(receipts.Config{Store: s.store, Providers: secrets, Retry: s.cfg.Retry,
			Now: time.Now, Logger: env.log, Registerer: s.registerer(roleReceipts)}); err != nil {
			return nil, err
		}
	}
	if roles[roleReceipts] {
		s.add(stageFollowers, "receipt sweeper", func(ctx context.Context) error { s.intake.RunSweeper(ctx, 5*time.Second); return nil })
	}
	if roles[roleRelay] {
		r, err := eventstore.NewRelay(eventstore.RelayConfig{Store: s.store, JetStream: s.js, Names: s.names, Replicas: s.cfg.NATSReplicas, Logger: env.log, Registerer: s.registry, LagInterval: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		s.add(stageFollowers, "relay", r.Run)
	}
	if roles[roleTracker] {
		t, err := tracker.New(tracker.Config{Store: s.store, Logger: env.log, Registerer: s.registry})
		if err != nil {
			return nil, err
		}
		s.add(stageFollowers, "tracker", t.Run)
	}
	if roles[roleProject] {
		p, err := projections.NewRunner(projections.Config{Store: s.store, Logger: env.log, Registerer: s.registry, LagInterval: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		s.add(stageFollowers, "projections", p.Run)
	}
	if roles[roleWebhooks] {
		d, err := callbacks.New(callbacks.Config{Store: s.store, Webhooks: s.webhooks, Guard: webhooks.Guard{AllowPrivate: s.cfg.WebhookAllowPrivate},
			Schedule: s.cfg.WebhookRetrySchedule, DisableAfter: s.cfg.WebhookDisableAfter, Concurrency: s.cfg.WebhookConcurrency,
			AttemptsKeep: s.cfg.WebhookAttemptsKeep, Lease: s.cfg.WebhookLease, DirectBudget: directBudget(s.cfg.WebhookDirectBudget),
			Logger: env.log, Registerer: s.registry, Hooks: env.webhookHooks})
		if err != nil {
			return nil, err
		}
		s.add(stageFollowers, "webhooks", d.Run)
	}
	if roles[roleAPI] || roles[roleReceipts] {
		if err := s.buildAPI(); err != nil {
			return nil, err
		}
	}
	if roles[roleSim] {
		if err := s.buildSim(); err != nil {
			return nil, err
		}
	}
	if roles[roleScheduler] {
		sc, err := scheduler.New(scheduler.Config{Store: s.store, JetStream: s.js, Names: s.names, Logger: env.log, Registerer: s.registry,
			StrandedAfter: s.cfg.StrandedAfter, StrandedEvery: s.cfg.StrandedEvery})
		if err != nil {
			return nil, err
		}
		s.add(stageProducers, "scheduler", sc.Run)
	}
	if roles[roleDispatch] {
		breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
		if err != nil {
			return nil, err
		}
		w, err := dispatch.New(dispatch.Config{Store: s.store, JetStream: s.js, Names: s.names, Providers: provs, Routes: s.cfg.Routes,
			Breaker: breaker, Retry: s.cfg.Retry, Receipts: s.intake, Logger: env.log, Registerer: s.registry,
			BatchSize: s.cfg.DispatchBatch, Fetchers: s.cfg.DispatchFetchers, AckWait: s.cfg.DispatchAckWait, Hooks: s.hooks})
		if err != nil {
			return nil, err
		}
		s.add(stageProducers, "dispatch", w.Run)
	}
	ok = true
	return s, nil
}

// registerer gives a role's metrics to the registry only when the role
// runs here, so that a component built for another role's sake (the
// intake, for dispatch's parked receipts) does not register twice.
func (s *system) registerer(role string) prometheus.Registerer {
	if s.roles[role] {
		return s.registry
	}
	return nil
}

func (s *system) connectNATS(ctx context.Context) error {
	url := s.cfg.NATSURL
	if url == "" {
		e, err := bus.StartEmbedded(filepath.Join(s.cfg.DataDir, "nats"), "127.0.0.1", -1)
		if err != nil {
			return err
		}
		s.embedded, url = e, e.URL
	}
	nc, js, err := bus.Connect(url, "afterok")
	if err != nil {
		return err
	}
	s.nc, s.js = nc, js
	return bus.EnsureStreams(ctx, js, s.names, bus.StreamConfig{Replicas: s.cfg.NATSReplicas, SyncAlways: s.cfg.NATSSyncAlways,
		Duplicates: s.cfg.NATSDuplicates, EventsMaxBytes: s.cfg.NATSEventsMaxBytes})
}

func (s *system) buildAPI() error {
	s.acceptor = orders.New(s.store, time.Now, orders.Config{IdempotencyTTL: s.cfg.IdempotencyTTL, Logger: s.env.log})
	policy := accept.DefaultPolicy()
	policy.MaxMessages, policy.Prices = s.cfg.MaxMessages, s.cfg.Prices
	ready := map[string]func(context.Context) error{"postgres": s.pool.Ping}
	if s.nc != nil {
		ready["nats"] = func(context.Context) error {
			if !s.nc.IsConnected() {
				return fmt.Errorf("nats: %s", s.nc.Status())
			}
			return nil
		}
	}
	c, err := console.New()
	if err != nil {
		return err
	}
	extra := []api.Route{c.Route()}
	if s.roles[roleReceipts] {
		extra = append(extra, s.intake.Route())
	}
	deps := api.Deps{Store: s.store, Accounts: s.accounts, Webhooks: s.webhooks, Acceptor: s.acceptor, Policy: policy, Registry: s.registry,
		Logger: s.env.log, Now: time.Now, Ready: ready, Extra: extra}
	if s.api, err = api.New(deps, api.Config{RateLimit: s.cfg.RateLimit, RateBurst: s.cfg.RateBurst,
		MaxStreamsPerAccount: s.cfg.MaxStreamsPerAccount, BodyBudgetBytes: s.cfg.BodyBudget,
		BodyMinRate: s.cfg.BodyMinRate, BodyGrace: s.cfg.BodyGrace}); err != nil {
		return err
	}
	s.add(stageAPI, "api", func(ctx context.Context) error {
		err := s.api.Run(ctx, s.apiL)
		s.acceptor.Close() // the orders in hand are committed before the followers stop
		return err
	})
	s.add(stageAPI, "idempotency janitor", func(ctx context.Context) error {
		s.acceptor.RunJanitor(ctx, time.Minute)
		return nil
	})
	return nil
}

func (s *system) buildSim() error {
	c := sim.DefaultConfig()
	c.CallbackBase = "http://" + s.cfg.Addr
	c.SubmitLatency, c.ReceiptDelay, c.ReceiptMaxAge = s.cfg.SimSubmitLatency, s.cfg.SimReceiptDelay, s.cfg.SimReceiptMaxAge
	c.SubmitJitter = c.SubmitLatency / 2
	c.Logger = s.env.log.With("role", "sim")
	var err error
	if s.simulator, err = sim.New(c); err != nil {
		return err
	}
	s.simSrv = &http.Server{Addr: s.cfg.SimAddr, Handler: s.simulator.Handler(), ReadHeaderTimeout: 10 * time.Second}
	s.add(stageSim, "sim", s.simulator.Run)
	s.add(stageSim, "sim http", func(ctx context.Context) error { return serveUntil(ctx, s.simSrv, s.simL) })
	return nil
}

func (s *system) providers() (map[string]provider.Provider, error) {
	out := map[string]provider.Provider{}
	for _, pc := range s.cfg.Providers {
		p, err := provider.NewHTTP(provider.HTTPConfig{Name: pc.Name, BaseURL: pc.URL, APIKey: pc.APIKey, Timeout: time.Duration(pc.Timeout)})
		if err != nil {
			return nil, err
		}
		out[pc.Name] = p
	}
	return out, nil
}

// listen binds the ports after every role is built and before anything
// runs, so that the printed addresses are real and a taken port fails the
// start. On an error it closes what it had bound.
func (s *system) listen() (err error) {
	defer func() {
		if err != nil {
			for _, l := range []net.Listener{s.apiL, s.simL, s.pprofL} {
				if l != nil {
					l.Close()
				}
			}
		}
	}()
	if s.api != nil {
		if s.apiL, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return fmt.Errorf("api: %w", err)
		}
		s.apiAddr = s.apiL.Addr().String()
	}
	if s.simSrv != nil {
		if s.simL, err = net.Listen("tcp", s.cfg.SimAddr); err != nil {
			return fmt.Errorf("provider simulator: %w", err)
		}
		s.simAddr = s.simL.Addr().String()
	}
	if s.cfg.PprofAddr != "" {
		if s.pprofL, err = net.Listen("tcp", s.cfg.PprofAddr); err != nil {
			return fmt.Errorf("pprof: %w", err)
		}
		s.pprofSrv = &http.Server{Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		s.add(stageFollowers, "pprof", func(ctx context.Context) error { return serveUntil(ctx, s.pprofSrv, s.pprofL) })
	}
	return nil
}

// Run runs the roles until ctx ends or one fails, then stops them stage by
// stage in reverse (see the stages), and closes the connections last.
func (s *system) Run(ctx context.Context) error {
	defer s.close()
	errs := make(chan error, 16)
	var stops [stageCount]context.CancelFunc
	var wgs [stageCount]sync.WaitGroup
	for i, tasks := range s.stages {
		// Not ctx's children: each stage stops only when its turn comes.
		stageCtx, stop := context.WithCancel(context.Background())
		stops[i] = stop
		defer stop()
		for _, t := range tasks {
			wgs[i].Add(1)
			go func() {
				defer wgs[i].Done()
				if err := t.run(stageCtx); err != nil && stageCtx.Err() == nil {
					errs <- fmt.Errorf("%s: %w", t.name, err)
				}
			}()
		}
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
		s.env.log.Error("a role failed; shutting down", "err", runErr)
	}
	s.env.log.Info("shutting down")
	for i := stageCount - 1; i >= 0; i-- {
		stops[i]()
		wgs[i].Wait()
	}
	return runErr
}

// maintainedTables are the tables that churn on every message, as the
// packages that write them name them; they are vacuumed by afterok itself
// when the server's autovacuum is off.
func maintainedTables() []eventstore.Table {
	return slices.Concat(eventstore.MaintainedTables, scheduler.MaintainedTables,
		projections.MaintainedTables, receipts.MaintainedTables, tracker.MaintainedTables, callbacks.MaintainedTables)
}

// serveUntil serves srv on l until ctx ends, then shuts it down.
func serveUntil(ctx context.Context, srv *http.Server, l net.Listener) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	var err error
	select {
	case err = <-served:
	case <-ctx.Done():
		shutdownHTTP(srv)
		err = <-served
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func shutdownHTTP(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
}

func (s *system) close() {
	if s.nc != nil {
		_ = s.nc.Drain()
		s.nc.Close()
	}
	if s.embedded != nil {
		s.embedded.Close()
	}
	if s.pool != nil {
		s.pool.Close()
	}
}

func sortedRoles(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for r := range m {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

// directBudget is AFTEROK_WEBHOOK_DIRECT_BUDGET as callbacks.Config wants
// it: 0 (never send directly) is negative there.
func directBudget(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
