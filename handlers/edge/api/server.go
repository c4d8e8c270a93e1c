// Package api is afterok's HTTP edge: authentication, rate limiting,
// request decoding, the error table that turns typed errors into RFC 9457
// problem documents, and the endpoints of the public contract. It decides
// no business rule itself: validation lives in domain/accept, acceptance
// in handlers/commands/orders.
package api

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/logctx"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/cancel"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// Config holds the API's limits.
type Config struct {
	// MaxBodyBytes bounds a request body (default 64 MiB: a 100,000-message
	// order of short texts is ~10 MiB).
	MaxBodyBytes int64
	// RateLimit and RateBurst bound each account's requests (default 100/s,
	// burst 200).
	RateLimit float64
	RateBurst int
	// MaxStreamsPerAccount bounds an account's concurrent event streams
	// in one process (default 20); one more is refused with 429.
	MaxStreamsPerAccount int
	// BodyBudgetBytes bounds the bytes of the bodies of all requests in
	// progress (default 128 MiB: two bodies at the limit; never less than
	// MaxBodyBytes). A body costs 6–8 times its size until its order has
	// committed (BenchmarkLargeBodiesMemory), so this bounds what all
	// requests hold together. A body that does not fit is refused with 503
	// and Retry-After before it is read.
	BodyBudgetBytes int64
	// BodyMinRate (bytes/s, default 16 KiB/s) and BodyGrace (default
	// 10 s) time a body: after the grace it must have averaged the rate,
	// or the request ends with 408.
	BodyMinRate int64
	BodyGrace   time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if c.MaxBodyBytes < 0 || c.RateLimit < 0 || c.RateBurst < 0 || c.MaxStreamsPerAccount < 0 ||
		c.BodyBudgetBytes < 0 || c.BodyMinRate < 0 || c.BodyGrace < 0 {
		return c, errors.New("api: Config limits must not be negative")
	}
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, 64<<20)
	c.RateLimit = cmp.Or(c.RateLimit, 100)
	c.RateBurst = cmp.Or(c.RateBurst, 200)
	c.MaxStreamsPerAccount = cmp.Or(c.MaxStreamsPerAccount, 20)
	c.BodyBudgetBytes = max(cmp.Or(c.BodyBudgetBytes, 128<<20), c.MaxBodyBytes)
	c.BodyMinRate = cmp.Or(c.BodyMinRate, 16<<10)
	c.BodyGrace = cmp.Or(c.BodyGrace, 10*time.Second)
	return c, nil
}

// Deps are the services the API calls.
type Deps struct {
	Store    *eventstore.Store
	Accounts *accounts.Service
	Acceptor *orders.Acceptor
	// Canceler cancels messages and orders (default: one on Store).
	Canceler *cancel.Canceler
	// Redriver re-drives failed messages (default: one on Store that
	// accepts through Acceptor under Policy).
	Redriver *orders.Redriver
	// Webhooks manages status-callback endpoints (default: one on Store,
	// private targets refused).
	Webhooks *webhooks.Service
	Policy   accept.Policy
	Registry *prometheus.Registry
	Logger   *slog.Logger
	Now      func() time.Time
	// Ready are the readiness checks /readyz runs, by name.
	Ready map[string]func(context.Context) error
	// Extra routes mounted by other roles (receipt intake, read side),
	// each with its OpenAPI-documented method and pattern.
	Extra []Route
}

// Route is one endpoint.
type Route struct {
	Method  string
	Pattern string // Go 1.22 ServeMux pattern path, e.g. /v1/orders/{id}
	// Scope required of the API key; "" means the route does its own
	// authentication (or none).
	Scope  string
	Public bool // no API key at all (health, metrics, docs, receipts)
	Handle func(w http.ResponseWriter, r *http.Request, rc *RequestContext) error
}

// RequestContext is what a handler knows about the request beyond it.
type RequestContext struct {
	ID        string
	Principal accounts.Principal
	// attrs are added to the request's log line (order_id, message_count …).
	attrs []any
}

// Log adds attributes to the request's log line.
func (rc *RequestContext) Log(args ...any) { rc.attrs = append(rc.attrs, args...) }

// Server is the HTTP API.
type Server struct {
	deps    Deps
	cfg     Config
	mux     *http.ServeMux
	routes  []Route
	limits  *limiter
	metrics *metrics
	log     *slog.Logger
	live    *liveTail
	bodies  *bodyGuard
	// beforeAttach, set by tests only, runs between a resuming stream's
	// catch-up and its joining the live tail.
	beforeAttach func()
}

// New builds the API server; a negative limit is an error, a zero one
// takes its default.
func New(deps Deps, cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	if deps.Registry == nil {
		deps.Registry = prometheus.NewRegistry()
	}
	if deps.Canceler == nil && deps.Store != nil {
		deps.Canceler = cancel.New(deps.Store, deps.Now)
	}
	if deps.Redriver == nil && deps.Store != nil && deps.Acceptor != nil {
		deps.Redriver = orders.NewRedriver(deps.Store, deps.Acceptor, deps.Policy)
	}
	if deps.Webhooks == nil && deps.Store != nil {
		deps.Webhooks = webhooks.New(deps.Store, webhooks.Config{Now: deps.Now})
	}
	s := &Server{deps: deps, cfg: cfg, mux: http.NewServeMux(), log: logctx.Wrap(deps.Logger),
		limits: newLimiter(cfg.RateLimit, cfg.RateBurst), metrics: newMetrics(deps.Registry)}
	s.bodies = newBodyGuard(cfg, time.Now)
	var keys keyLookup
	if deps.Accounts != nil {
		keys = deps.Accounts
	}
	s.live = newLiveTail(deps.Store, keys, deps.Logger, cfg.MaxStreamsPerAccount, deps.Registry)
	s.routes = append(append(s.coreRoutes(), s.webhookRoutes()...), deps.Extra...)
	for _, rt := range s.routes {
		s.mux.Handle(rt.Method+" "+rt.Pattern, s.wrap(rt))
	}
	return s, nil
}

// Routes lists the mounted endpoints (the OpenAPI test compares them with
// the document).
func (s *Server) Routes() []Route { return s.routes }

func (s *Server) coreRoutes() []Route {
	return []Route{
		{Method: "GET", Pattern: "/healthz", Public: true, Handle: s.healthz},
		{Method: "GET", Pattern: "/readyz", Public: true, Handle: s.readyz},
		{Method: "GET", Pattern: "/metrics", Public: true, Handle: func(w http.ResponseWriter, r *http.Request, _ *RequestContext) error {
			promhttp.HandlerFor(s.deps.Registry, promhttp.HandlerOpts{}).ServeHTTP(w, r)
			return nil
		}},
		{Method: "GET", Pattern: "/openapi.json", Public: true, Handle: serveOpenAPI},
		{Method: "POST", Pattern: "/v1/orders", Scope: accounts.ScopeOrdersWrite, Handle: s.postOrder},
		{Method: "GET", Pattern: "/v1/account", Scope: accounts.ScopeMessagesRead, Handle: s.getAccount},
		// Client actions (cancel.go).
		{Method: "POST", Pattern: "/v1/orders/{id}/cancel", Scope: accounts.ScopeMessagesWrite, Handle: s.cancelOrder},
		{Method: "POST", Pattern: "/v1/messages/{id}/cancel", Scope: accounts.ScopeMessagesWrite, Handle: s.cancelMessage},
		// Operator actions (redrive.go).
		{Method: "POST", Pattern: "/v1/orders/{id}/redrive", Scope: accounts.ScopeMessagesWrite, Handle: s.redriveOrder},
		{Method: "POST", Pattern: "/v1/messages/{id}/redrive", Scope: accounts.ScopeMessagesWrite, Handle: s.redriveMessage},
		// The read side (reads.go, events_stream.go).
		{Method: "GET", Pattern: "/v1/orders", Scope: accounts.ScopeMessagesRead, Handle: s.listOrders},
		{Method: "GET", Pattern: "/v1/orders/{id}", Scope: accounts.ScopeMessagesRead, Handle: s.getOrder},
		{Method: "GET", Pattern: "/v1/orders/{id}/messages", Scope: accounts.ScopeMessagesRead, Handle: s.listOrderMessages},
		{Method: "GET", Pattern: "/v1/messages", Scope: accounts.ScopeMessagesRead, Handle: s.searchMessages},
		{Method: "GET", Pattern: "/v1/messages/{id}", Scope: accounts.ScopeMessagesRead, Handle: s.getMessage},
		{Method: "GET", Pattern: "/v1/messages/{id}/events", Scope: accounts.ScopeEventsRead, Handle: s.getMessageEvents},
		{Method: "GET", Pattern: "/v1/events", Scope: accounts.ScopeEventsRead, Handle: s.pullEvents},
		{Method: "GET", Pattern: "/v1/events/stream", Scope: accounts.ScopeEventsRead, Handle: s.streamEvents},
		{Method: "GET", Pattern: "/v1/accounts/{id}", Scope: accounts.ScopeMessagesRead, Handle: s.getAccountSummary},
		{Method: "GET", Pattern: "/v1/accounts/{id}/events", Scope: accounts.ScopeEventsRead, Handle: s.getAccountEvents},
		{Method: "GET", Pattern: "/v1/providers/stats", Scope: accounts.ScopeAdmin, Handle: s.getProviderStats},
		// Accounts (admin) and the caller's keys (admin_accounts.go, keys.go).
		{Method: "GET", Pattern: "/v1/accounts", Scope: accounts.ScopeAdmin, Handle: s.listAccounts},
		{Method: "POST", Pattern: "/v1/accounts", Scope: accounts.ScopeAdmin, Handle: s.openAccount},
		{Method: "POST", Pattern: "/v1/accounts/{id}/credits", Scope: accounts.ScopeAdmin, Handle: s.creditAccount},
		{Method: "GET", Pattern: "/v1/account/keys", Scope: accounts.ScopeKeysManage, Handle: s.listKeys},
		{Method: "POST", Pattern: "/v1/account/keys", Scope: accounts.ScopeKeysManage, Handle: s.issueKey},
		{Method: "DELETE", Pattern: "/v1/account/keys/{id}", Scope: accounts.ScopeKeysManage, Handle: s.revokeKey},
	}
}

// ServeHTTP routes a request; an unknown path or method gets a problem
// document like every other error, not the mux's plain text.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern != "" {
		s.mux.ServeHTTP(w, r)
		return
	}
	rc := &RequestContext{ID: requestID(r)}
	var allow []string
	for _, m := range []string{"GET", "POST", "PUT", "PATCH", "DELETE"} {
		probe := r.Clone(r.Context())
		probe.Method = m
		if _, p := s.mux.Handler(probe); p != "" {
			allow = append(allow, m)
		}
	}
	var err error = fail(errNotFound, "no endpoint at %s", r.URL.Path)
	if len(allow) > 0 {
		err = &detailed{kind: errMethod, detail: r.Method + " is not allowed here", allow: strings.Join(allow, ", ")}
	}
	p, d := problemFor(err, rc.ID, r.URL.Path)
	w.Header().Set("X-Request-Id", rc.ID)
	writeProblem(w, p, d)
	s.metrics.observe("unmatched", r.Method, p.Status, 0)
}

// wrap adds, around a route: request id, panic recovery, authentication
// and scope, rate limiting, the body guard (bodies.go), the error table,
// metrics and the log line. The request id, and the account once known,
// go into the request's context (logctx), so every line logged with it on
// the request's path names them.
func (s *Server) wrap(rt Route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rc := &RequestContext{ID: requestID(r)}
		r = r.WithContext(logctx.With(r.Context(), "request_id", rc.ID))
		rw := &statusWriter{ResponseWriter: w}
		rw.Header().Set("X-Request-Id", rc.ID)
		err := func() (err error) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					err = errors.New("panic: " + stringify(v))
					s.log.ErrorContext(r.Context(), "handler panicked", "route", rt.Pattern, "panic", v)
				}
			}()
			if !rt.Public {
				err := s.authenticate(r, rc, rt.Scope)
				if rc.Principal.AccountID != "" { // a key lacking the scope is still that account's
					r = r.WithContext(logctx.With(r.Context(), "account_id", rc.Principal.AccountID))
				}
				if err != nil {
					return err
				}
				if d := s.limits.wait(rc.Principal.AccountID, s.deps.Now()); d > 0 {
					return &detailed{kind: errRateLimited, retryAfter: d,
						detail: "this account is limited to " + rateString(s.cfg.RateLimit, s.cfg.RateBurst)}
				}
			}
			if hasBody(r) {
				release, err := s.bodies.admit(rw, r, s.cfg.MaxBodyBytes)
				if err != nil {
					return err
				}
				defer release()
			}
			return rt.Handle(rw, r, rc)
		}()
		if err != nil {
			if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
				rw.status = 499 // client closed the request; nothing to write
			} else {
				p, d := problemFor(err, rc.ID, r.URL.Path)
				if p.Status >= 500 {
					s.log.ErrorContext(r.Context(), "request failed", "route", rt.Pattern, "err", err)
				}
				s.metrics.rejection(p.Code)
				if !rw.wrote {
					writeProblem(rw, p, d)
				}
			}
		}
		s.metrics.observe(rt.Pattern, r.Method, rw.status, time.Since(start))
		attrs := append([]any{"method", r.Method, "route", rt.Pattern, "status", rw.status,
			"duration_ms", time.Since(start).Milliseconds()}, rc.attrs...)
		level := slog.LevelInfo
		if rt.Public && rw.status < 400 {
			level = slog.LevelDebug // probes and scrapes would drown the log
		}
		s.log.Log(r.Context(), level, "request", attrs...)
	})
}

func (s *Server) authenticate(r *http.Request, rc *RequestContext, scope string) error {
	key, ok := bearer(r)
	if !ok {
		return fail(accounts.ErrUnauthenticated, "send the API key as Authorization: Bearer <key>")
	}
	p, err := s.deps.Accounts.Authenticate(r.Context(), key)
	if err != nil {
		if errors.Is(err, accounts.ErrUnauthenticated) {
			return fail(accounts.ErrUnauthenticated, "the API key is unknown or revoked")
		}
		return err
	}
	rc.Principal = p
	if scope != "" && !p.Has(scope) {
		return fail(errForbidden, "this API key lacks the %s scope", scope)
	}
	return nil
}

// bearer is the request's API key.
func bearer(r *http.Request) (string, bool) {
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return strings.TrimSpace(key), ok && key != ""
}

var validRequestID = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,100}$`)

// requestID keeps a caller's X-Request-Id when it is sane, else makes one.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); validRequestID.MatchString(id) {
		return id
	}
	b := make([]byte, 12)
	_, _ = rand.Read(b)
	return "req_" + hex.EncodeToString(b)
}

// statusWriter remembers the status for logs and metrics.
type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if !w.wrote {
		w.status, w.wrote = 200, true
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets streaming handlers (SSE) flush through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
