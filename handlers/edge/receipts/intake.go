package receipts

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/logctx"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider"
)

// Config configures the intake.
type Config struct {
	Store *eventstore.Store
	// Providers maps a provider's name (the {provider} of the path) to the
	// secret it signs its callbacks with.
	Providers map[string][]byte
	// Retry decides what a transient failure receipt leads to, through
	// RetryPolicy.AfterFailure as the dispatch workers do. The zero value
	// means routing.DefaultRetryPolicy(); it must be the policy the workers
	// are given, or a message's retry budget depends on which of the two
	// saw the failure.
	Retry routing.RetryPolicy
	// Now is the clock (default time.Now).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Tolerance is how far a signature's timestamp may be from Now; 0 means
	// provider.DefaultSignatureTolerance.
	Tolerance time.Duration
	// MaxBodyBytes bounds a callback body (default 4 MiB, some 20,000
	// receipts).
	MaxBodyBytes int64
	// ConflictRetries is how many times a batch is decided when its
	// messages keep moving under it before the request is answered 503
	// (default 5).
	ConflictRetries int
}

func (c Config) withDefaults() Config {
	c.Retry = cmp.Or(c.Retry, routing.DefaultRetryPolicy())
	if c.Now == nil { // a func is not comparable, so not cmp.Or's
		c.Now = time.Now
	}
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Registerer == nil { // not cmp.Or: it would build a registry every time
		c.Registerer = prometheus.NewRegistry()
	}
	c.MaxBodyBytes = cmp.Or(c.MaxBodyBytes, 4<<20)
	c.ConflictRetries = cmp.Or(c.ConflictRetries, 5)
	return c
}

// Intake is the delivery-receipt intake. It is safe for concurrent use.
type Intake struct {
	cfg     Config
	pool    *pgxpool.Pool
	log     *slog.Logger
	metrics *metrics
	// beforeLock, when set (by tests), runs between loading the messages
	// and locking them, on every try.
	beforeLock func(try int)
}

// New returns an Intake, or an error naming what cfg lacks.
func New(cfg Config) (*Intake, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("receipts: Config.Store is required")
	case cfg.Tolerance < 0 || cfg.MaxBodyBytes < 0 || cfg.ConflictRetries < 0:
		return nil, errors.New("receipts: Config.Tolerance, MaxBodyBytes and ConflictRetries must not be negative")
	}
	cfg = cfg.withDefaults()
	cfg.Providers = maps.Clone(cfg.Providers) // the caller's map stays the caller's
	return &Intake{cfg: cfg, pool: cfg.Store.Pool(), log: logctx.Wrap(cfg.Logger), metrics: newMetrics(cfg.Registerer)}, nil
}

// Route is POST /v1/receipts/{provider}, to mount with api.Deps.Extra. It
// is public to the API's key authentication: a provider authenticates
// with the signature of its callback instead.
func (in *Intake) Route() api.Route {
	return api.Route{Method: http.MethodPost, Pattern: "/v1/receipts/{provider}", Public: true, Handle: in.serve}
}

// Summary is the answer to a receipts callback: how many receipts the body
// held and what became of them.
type Summary struct {
	Received int `json:"received"`
	Applied  int `json:"applied"`
	Parked   int `json:"parked"`
	Ignored  int `json:"ignored"`
	// Refused receipts were not usable (see Refusal); Received counts them
	// too, and Refusals says which and why.
	Refused  int       `json:"refused"`
	Refusals []Refusal `json:"refusals,omitempty"`
}

// AuthError refuses a callback that does not come from a configured
// provider: the provider is unknown, or the signature is missing, stale or
// wrong. It matches accounts.ErrUnauthenticated, which the API answers
// with 401 and nothing more, so a sender learns only "no" while the log
// line says which.
type AuthError struct {
	Provider string
	// Problem is "unknown_provider" or a provider.SignatureProblem.
	Problem string
}

func (e *AuthError) Error() string {
	return fmt.Sprintf("receipts from provider %q refused: %s", e.Provider, e.Problem)
}

// Unwrap makes errors.Is(err, accounts.ErrUnauthenticated) hold.
func (e *AuthError) Unwrap() error { return accounts.ErrUnauthenticated }

// ContendedError is returned when a batch's messages kept changing while
// it was decided. It is safe to retry, and says so (SafeToRetry, the
// interface pgconn.SafeToRetry looks for), which the API answers with 503:
// the provider sends the callback again later, and nothing of it was kept.
type ContendedError struct {
	Tries int
	Err   error
}

func (e *ContendedError) Error() string {
	return fmt.Sprintf("receipts: still conflicting after %d tries: %v", e.Tries, e.Err)
}

// Unwrap exposes the last conflict (an eventstore.ErrWrongExpectedVersion).
func (e *ContendedError) Unwrap() error { return e.Err }

// SafeToRetry reports that nothing was written: the request may be sent again.
func (e *ContendedError) SafeToRetry() bool { return true }

// serve authenticates the callback, parses it strictly, settles it and
// answers with the Summary.
func (in *Intake) serve(w http.ResponseWriter, r *http.Request, rc *api.RequestContext) error {
	name := r.PathValue("provider")
	secret, known := in.cfg.Providers[name]
	if !known {
		in.metrics.refused.WithLabelValues("unknown", "unknown_provider").Inc()
		rc.Log("provider", name, "refused", "unknown_provider")
		return &AuthError{Provider: name, Problem: "unknown_provider"}
	}
	rc.Log("provider", name)
	// The request already names its request_id; every line of this
	// callback names its provider too.
	ctx := logctx.With(r.Context(), "provider", name)
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, in.cfg.MaxBodyBytes))
	if err != nil {
		in.metrics.refused.WithLabelValues(name, "unreadable_body").Inc()
		if errors.Is(err, api.ErrBodiesBusy) || errors.Is(err, api.ErrBodyTimeout) {
			return err // 503 or 408: the provider retries, the receipt is not lost
		}
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return fmt.Errorf("receipts body larger than %d bytes: %w", tooLarge.Limit, err) // 413
		}
		return &provider.ReceiptError{Index: -1, Problem: "unreadable: " + err.Error()}
	}
	if err := provider.VerifySignature(secret, r.Header.Get(provider.SignatureHeader), body, in.cfg.Now(), in.cfg.Tolerance); err != nil {
		problem := "invalid"
		var se *provider.SignatureError
		if errors.As(err, &se) {
			problem = string(se.Problem)
		}
		in.metrics.refused.WithLabelValues(name, "signature_"+problem).Inc()
		rc.Log("refused", "signature_"+problem)
		return &AuthError{Provider: name, Problem: "signature " + problem}
	}
	receipts, refused, err := provider.ParseReceiptBatch(name, body)
	if err != nil {
		in.metrics.refused.WithLabelValues(name, "malformed").Inc()
		rc.Log("refused", "malformed", "problem", err.Error())
		return err
	}
	var sum Summary
	if len(receipts) > 0 {
		s, err := in.settle(ctx, receipts, refused, messageIDs(receipts), rc.ID)
		if err != nil {
			return err
		}
		in.report(ctx, s, name)
		sum = summarize(s.incoming)
	} else if err := recordRefusals(ctx, in.pool, name, rc.ID, refused, in.cfg.Now().UTC()); err != nil {
		return err
	}
	sum.Refusals = in.refusals(ctx, name, refused)
	sum.Refused = len(refused)
	sum.Received += sum.Refused
	rc.Log("received", sum.Received, "applied", sum.Applied, "parked", sum.Parked, "ignored", sum.Ignored, "refused", sum.Refused)
	w.Header().Set("Content-Type", "application/json")
	// The receipts are committed whatever happens to the answer: a write
	// error only means the provider left, and it will send the callback
	// again, which finds duplicates. Nothing to report as our failure.
	_ = json.NewEncoder(w).Encode(sum)
	return nil
}

func summarize(es []*entry) Summary {
	s := Summary{Received: len(es)}
	for _, e := range es {
		switch e.disposition {
		case Applied:
			s.Applied++
		case Parked:
			s.Parked++
		case Ignored:
			s.Ignored++
		}
	}
	return s
}

// messageIDs lists the distinct messages of rs, in order of appearance.
func messageIDs(rs []provider.Receipt) []string {
	seen := make(map[string]bool, len(rs))
	var out []string
	for _, r := range rs {
		if !seen[r.MessageID] {
			seen[r.MessageID] = true
			out = append(out, r.MessageID)
		}
	}
	return out
}

// report counts and logs a committed settlement: one line per receipt
// that did not simply apply, so support can follow a message that did not
// end as its receipts said. callback is the provider whose callback ctx
// serves, which ctx's lines already name; "" for the sweeper.
func (in *Intake) report(ctx context.Context, s *settlement, callback string) {
	in.metrics.settled(s)
	for _, e := range s.unparked {
		in.logEntry(ctx, s.books[e.receipt.MessageID], e, true, callback)
	}
	for _, e := range s.incoming {
		in.logEntry(ctx, s.books[e.receipt.MessageID], e, false, callback)
	}
}

func (in *Intake) logEntry(ctx context.Context, b *book, e *entry, wasParked bool, callback string) {
	r := e.receipt
	attrs := []any{"message_id", r.MessageID, "order_id", b.msg.OrderID, "attempt", r.Attempt,
		"provider_message_id", r.ProviderMessageID, "status", r.Status, "part", r.Part, "parts", r.Parts,
		"disposition", e.disposition}
	switch {
	case callback == "": // the sweeper: no request names the provider
		attrs = append(attrs, "provider", r.Provider)
	case r.Provider != callback: // parked from another provider's callback
		attrs = append(attrs, "receipt_provider", r.Provider)
	}
	if e.reason != "" {
		attrs = append(attrs, "reason", e.reason)
	}
	if wasParked {
		attrs = append(attrs, "was_parked", true)
	}
	switch {
	case e.lostDelivery:
		in.log.WarnContext(ctx, "delivered receipt for an attempt already given up: the handset may get the message twice", attrs...)
	case e.reason == ReasonProviderMismatch:
		// An authenticated provider reporting on a message it was not given:
		// a misrouted callback at best, an attempt to settle another
		// provider's message at worst. Never applied; worth a look.
		in.log.WarnContext(ctx, "receipt from another provider than the attempt's, ignored", attrs...)
	case e.disposition == Parked && !wasParked:
		in.log.InfoContext(ctx, "receipt parked until its submission is recorded", attrs...)
	case e.disposition == Ignored && e.reason != ReasonDuplicate:
		in.log.InfoContext(ctx, "receipt ignored", attrs...)
	default:
		in.log.DebugContext(ctx, "receipt settled", attrs...)
	}
}

// MaintainedTables are the tables the intake wants eventstore.Maintainn// to look after: parked receipts are inserted and deleted as they settle.
var MaintainedTables = []eventstore.Table{{Name: "receipts", Every: time.Minute}}
