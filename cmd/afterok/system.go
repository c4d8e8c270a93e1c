package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
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
	"github.com/afterok/afterok/handlers/accounts"
	"github.com/afterok/afterok/handlers/api"
	"github.com/afterok/afterok/handlers/dispatch"
	"github.com/afterok/afterok/handlers/orders"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/receipts"
	"github.com/afterok/afterok/handlers/scheduler"
	"github.com/afterok/afterok/handlers/tracker"
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
)

var allRoles = []string{roleAPI, roleReceipts, roleRelay, roleScheduler, roleDispatch, roleTracker, roleProject}

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
	acceptor  *orders.Acceptor
	intake    *receipts.Intake
	simulator *sim.Simulator
	projector *projections.Runner

	apiSrv, simSrv *http.Server
	apiAddr        string
	simAddr        string

	hooks dispatch.Hooks // fault tests stop workers at chosen points
}

// start connects and builds every component of the selected roles; Run
// starts them.
func start(ctx context.Context, env *environment, roles map[string]bool) (*system, error) {
	s := &system{env: env, cfg: env.cfg, roles: roles, registry: prometheus.NewRegistry(),
		names: bus.Names{Prefix: env.cfg.Prefix}}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	ok := false
	defer func() {
		if !ok {
			s.close()
		}
	}()
	pool, err := connectTraced(ctx, env, strings.Join(sortedRoles(roles), ","), eventstore.NewQueryMetrics(s.registry))
	if err != nil {
		return nil, err
	}
	s.pool, s.store = pool, eventstore.New(pool)
	s.accounts = accounts.New(s.store, time.Now, accounts.Currencies(s.cfg.Prices.Currency()))
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
		s.intake = receipts.New(receipts.Config{Store: s.store, Providers: secrets, Retry: s.cfg.Retry,
			Now: time.Now, Logger: env.log, Registerer: s.registerer(roleReceipts)})
	}
	if roles[roleProject] {
		if s.projector, err = projections.NewRunner(s.store, projections.Config{Logger: env.log, Registry: s.registry, LagInterval: 5 * time.Second}); err != nil {
			return nil, err
		}
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
	return bus.EnsureStreams(ctx, js, s.names, bus.StreamConfig{SyncAlways: s.cfg.NATSSyncAlways, Duplicates: s.cfg.NATSDuplicates,
		EventsMaxBytes: s.cfg.NATSEventsMaxBytes})
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
	var extra []api.Route
	if s.roles[roleReceipts] {
		extra = append(extra, s.intake.Route())
	}
	deps := api.Deps{Store: s.store, Accounts: s.accounts, Acceptor: s.acceptor, Policy: policy, Registry: s.registry,
		Logger: s.env.log, Now: time.Now, Ready: ready, Extra: extra}
	srv := api.New(deps, api.Config{RateLimit: s.cfg.RateLimit, RateBurst: s.cfg.RateBurst,
		MaxStreamsPerAccount: s.cfg.MaxStreamsPerAccount, BodyBudgetBytes: s.cfg.BodyBudget,
		BodyMinRate: s.cfg.BodyMinRate, BodyGrace: s.cfg.BodyGrace})
	s.apiSrv = &http.Server{Addr: s.cfg.Addr, Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

func (s *system) buildSim() error {
	c := sim.DefaultConfig()
	c.CallbackBase = "http://" + s.cfg.Addr
	c.SubmitLatency, c.ReceiptDelay = s.cfg.SimSubmitLatency, s.cfg.SimReceiptDelay
	c.SubmitJitter = c.SubmitLatency / 2
	c.Logger = s.env.log.With("role", "sim")
	if err := c.Validate(); err != nil {
		return err
	}
	s.simulator = sim.New(c)
	s.simSrv = &http.Server{Addr: s.cfg.SimAddr, Handler: s.simulator.Handler(), ReadHeaderTimeout: 10 * time.Second}
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

// listen binds the HTTP servers before anything runs, so that the printed
// addresses are real and a taken port fails the start.
func (s *system) listen() (api, simL net.Listener, err error) {
	if s.apiSrv != nil {
		if api, err = net.Listen("tcp", s.cfg.Addr); err != nil {
			return nil, nil, fmt.Errorf("api: %w", err)
		}
		s.apiAddr = api.Addr().String()
	}
	if s.simSrv != nil {
		if simL, err = net.Listen("tcp", s.cfg.SimAddr); err != nil {
			if api != nil {
				api.Close()
			}
			return nil, nil, fmt.Errorf("provider simulator: %w", err)
		}
		s.simAddr = simL.Addr().String()
	}
	return api, simL, nil
}

// Run runs the roles until ctx ends, then shuts down in order: stop making
// new submissions, let the simulator deliver the receipts it owes, stop
// taking requests and commit the orders in hand, then stop the followers.
func (s *system) Run(ctx context.Context, apiL, simL net.Listener) error {
	defer s.close()
	errs := make(chan error, 16)
	var producers, followers, simWG sync.WaitGroup
	prodCtx, stopProducers := context.WithCancel(context.Background())
	followCtx, stopFollowers := context.WithCancel(context.Background())
	simCtx, stopSim := context.WithCancel(context.Background())
	defer stopProducers()
	defer stopFollowers()
	defer stopSim()
	goRole := func(wg *sync.WaitGroup, ctx context.Context, name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if s.cfg.PprofAddr != "" {
		pp := &http.Server{Addr: s.cfg.PprofAddr, Handler: pprofHandler(), ReadHeaderTimeout: 10 * time.Second}
		goRole(&followers, followCtx, "pprof", func(ctx context.Context) error {
			stopped := make(chan struct{})
			defer close(stopped)
			go func() { // closes the server when the role stops
				select {
				case <-ctx.Done():
					_ = pp.Close()
				case <-stopped:
				}
			}()
			if err := pp.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	if s.pool != nil { // `afterok provider-sim` has no database
		goRole(&followers, followCtx, "table maintenance", func(ctx context.Context) error {
			return eventstore.Maintain(ctx, s.pool, maintainedTables, s.env.log)
		})
	}
	if s.simulator != nil {
		goRole(&simWG, simCtx, "sim", s.simulator.Run)
		goRole(&simWG, simCtx, "sim http", func(context.Context) error { return serve(s.simSrv, simL) })
	}
	if s.apiSrv != nil {
		goRole(&followers, followCtx, "api", func(context.Context) error { return serve(s.apiSrv, apiL) })
		goRole(&followers, followCtx, "idempotency janitor", func(ctx context.Context) error {
			s.acceptor.RunJanitor(ctx, time.Minute)
			return nil
		})
	}
	if s.roles[roleReceipts] {
		goRole(&followers, followCtx, "receipt sweeper", func(ctx context.Context) error { s.intake.RunSweeper(ctx, 5*time.Second); return nil })
	}
	if s.roles[roleRelay] {
		r, err := eventstore.NewRelay(eventstore.RelayConfig{Store: s.store, JetStream: s.js, Names: s.names, Logger: s.env.log, Registerer: s.registry, LagInterval: 5 * time.Second})
		if err != nil {
			return err
		}
		goRole(&followers, followCtx, "relay", r.Run)
	}
	if s.roles[roleTracker] {
		t := tracker.New(tracker.Config{Store: s.store, Logger: s.env.log, Registerer: s.registry})
		goRole(&followers, followCtx, "tracker", t.Run)
	}
	if s.roles[roleProject] {
		goRole(&followers, followCtx, "projections", s.projector.Run)
	}
	if s.roles[roleScheduler] {
		sc := scheduler.New(scheduler.Config{Store: s.store, JetStream: s.js, Names: s.names, Logger: s.env.log, Registerer: s.registry})
		goRole(&producers, prodCtx, "scheduler", sc.Run)
	}
	if s.roles[roleDispatch] {
		provs, err := s.providers()
		if err != nil {
			return err
		}
		breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
		if err != nil {
			return err
		}
		w := dispatch.New(dispatch.Config{Store: s.store, JetStream: s.js, Names: s.names, Providers: provs, Routes: s.cfg.Routes,
			Breaker: breaker, Retry: s.cfg.Retry, Receipts: s.intake, Logger: s.env.log, Registerer: s.registry,
			BatchSize: s.cfg.DispatchBatch, Fetchers: s.cfg.DispatchFetchers, AckWait: s.cfg.DispatchAckWait, Hooks: s.hooks})
		goRole(&producers, prodCtx, "dispatch", w.Run)
	}
	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errs:
		s.env.log.Error("a role failed; shutting down", "err", runErr)
	}
	s.env.log.Info("shutting down")
	stopProducers()
	producers.Wait()
	if s.simulator != nil {
		stopSim()
		shutdownHTTP(s.simSrv)
		simWG.Wait()
	}
	if s.apiSrv != nil {
		shutdownHTTP(s.apiSrv)
		s.acceptor.Close()
	}
	stopFollowers()
	followers.Wait()
	return runErr
}

// maintainedTables are the tables that churn on every message; they are
// vacuumed by afterok itself when the server's autovacuum is off.
var maintainedTables = []eventstore.Table{
	{Name: "streams", Every: 30 * time.Second},
	{Name: "message_schedule", Every: 15 * time.Second},
	{Name: "read_messages", Every: 30 * time.Second},
	{Name: "read_orders", Every: 30 * time.Second},
	{Name: "receipts", Every: time.Minute},
	{Name: "order_progress", Every: time.Minute},
	{Name: "checkpoints", Every: 15 * time.Second},
	{Name: "events", Every: time.Minute, AnalyzeOnly: true},
	{Name: "events", Every: 10 * time.Minute},
}

func serve(srv *http.Server, l net.Listener) error {
	if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
