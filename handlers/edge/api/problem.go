package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/cancel"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/commands/webhooks"
	"github.com/afterok/afterok/handlers/provider"
)

// Problem is an RFC 9457 problem document with afterok's stable code.
type Problem struct {
	Type      string              `json:"type"`
	Title     string              `json:"title"`
	Status    int                 `json:"status"`
	Code      string              `json:"code"`
	Detail    string              `json:"detail,omitempty"`
	Instance  string              `json:"instance,omitempty"`
	RequestID string              `json:"request_id,omitempty"`
	Errors    []accept.FieldError `json:"errors,omitempty"`
	Required  *domain.Money       `json:"required,omitempty"`
	Available *domain.Money       `json:"available,omitempty"`
}

// The errors handlers return that are not some package's own typed error.
var (
	errInvalidRequest = errors.New("invalid request")
	errForbidden      = errors.New("forbidden")
	errNotFound       = errors.New("not found")
	errTooLarge       = errors.New("request too large")
	errRateLimited    = errors.New("rate limited")
	errMethod         = errors.New("method not allowed")
	errUnavailable    = errors.New("unavailable")
)

// detailed wraps a kind with what the client should read.
type detailed struct {
	kind   error
	detail string
	// retryAfter, for rate limiting; allow, for 405.
	retryAfter time.Duration
	allow      string
}

func (e *detailed) Error() string { return e.kind.Error() + ": " + e.detail }
func (e *detailed) Unwrap() error { return e.kind }

// NotFound is what a mounted route (the console, say) returns for a thing
// it does not have: 404 not_found with detail as the problem's detail.
func NotFound(format string, args ...any) error { return fail(errNotFound, format, args...) }

func fail(kind error, format string, args ...any) error {
	return &detailed{kind: kind, detail: fmt.Sprintf(format, args...)}
}

// problemKinds is the one table from error to HTTP status and code. The
// first match wins; anything unmatched is a 500 whose cause is logged and
// never shown.
var problemKinds = []struct {
	is     func(error) bool
	status int
	code   string
	title  string
}{
	{isKind(errInvalidRequest), 400, "invalid_request", "The request is malformed"},
	{func(err error) bool { var v *http.MaxBytesError; return errors.As(err, &v) }, 413, "too_large", "The request body is too large"},
	{func(err error) bool { var v *provider.ReceiptError; return errors.As(err, &v) }, 400, "invalid_request", "The receipts body is malformed"},
	{isKind(orders.ErrUnstorable), 400, "invalid_request", "The order holds a value that cannot be stored"},
	{isKind(accounts.ErrInvalid), 400, "invalid_request", "The request is not one that can be acted on"},
	{isKind(accounts.ErrUnservedCurrency), 400, "invalid_request", "No price table serves this currency"},
	{isKind(domain.ErrInvalidAmount), 400, "invalid_request", "The amount is not one that can be credited"},
	{isKind(domain.ErrInvalidReason), 400, "invalid_request", "The reason is missing or cannot be kept"},
	{isKind(domain.ErrInvalidWebhook), 400, "invalid_request", "The webhook endpoint cannot be kept"},
	{isKind(webhooks.ErrForbiddenAddress), 400, "invalid_request", "The webhook URL may not be called"},
	{isKind(accounts.ErrUnauthenticated), 401, "unauthenticated", "Authentication required"},
	{isKind(domain.ErrInsufficientBalance), 402, "insufficient_balance", "The account's balance does not cover the order"},
	{isKind(errForbidden), 403, "forbidden", "The API key may not do this"},
	{isKind(accounts.ErrScopeNotHeld), 403, "forbidden", "The API key may not hand out or take away a scope it lacks"},
	{isKind(errNotFound), 404, "not_found", "No such resource"},
	{isKind(accounts.ErrUnknownAccount), 404, "not_found", "No such account"},
	{isKind(accounts.ErrUnknownKey), 404, "not_found", "No such API key"},
	{isKind(webhooks.ErrNotFound), 404, "not_found", "No such webhook endpoint"},
	{isKind(errMethod), 405, "method_not_allowed", "Method not allowed"},
	{isKind(ErrBodyTimeout), 408, "request_timeout", "The request body arrived too slowly"},
	{isKind(orders.ErrIdempotencyConflict), 409, "idempotency_conflict", "Idempotency-Key reused with a different request"},
	{isKind(accounts.ErrIdempotencyConflict), 409, "idempotency_conflict", "Idempotency-Key reused with a different request"},
	{isKind(cancel.ErrNotCancelable), 409, "not_cancelable", "The message is already routed, submitted or final"},
	{isKind(orders.ErrNotRedrivable), 409, "not_redrivable", "Only a failed message can be re-driven"},
	{isKind(orders.ErrAlreadyRedriven), 409, "already_redriven", "The message was re-driven already"},
	{isKind(errTooLarge), 413, "too_large", "The request is too large"},
	{isKind(accept.ErrTooLarge), 413, "too_large", "The order has too many messages"},
	{func(err error) bool { var v *accept.ValidationError; return errors.As(err, &v) }, 422, "validation_failed", "The order failed validation"},
	{isKind(errRateLimited), 429, "rate_limited", "Too many requests"},
	{isKind(orders.ErrShuttingDown), 503, "unavailable", "The service is shutting down"},
	{isKind(errUnavailable), 503, "unavailable", "A dependency is unavailable"},
	{isKind(ErrBodiesBusy), 503, "unavailable", "The server is busy reading other request bodies"},
	{isUnavailable, 503, "unavailable", "A dependency (the database or NATS) is unavailable; retry with the same Idempotency-Key"},
}

func isKind(kind error) func(error) bool { return func(err error) bool { return errors.Is(err, kind) } }

// problemFor builds the problem document for err.
func problemFor(err error, requestID, instance string) (Problem, *detailed) {
	p := Problem{Status: 500, Code: "internal", Title: "Internal error", RequestID: requestID, Instance: instance,
		Detail: "Something went wrong on our side. The request id lets support find what."}
	var d *detailed
	errors.As(err, &d)
	for _, k := range problemKinds {
		if k.is(err) {
			p.Status, p.Code, p.Title, p.Detail = k.status, k.code, k.title, ""
			break
		}
	}
	p.Type = "urn:afterok:problem:" + p.Code
	if d != nil && p.Status != 500 {
		p.Detail = d.detail
	}
	var ve *accept.ValidationError
	if errors.As(err, &ve) {
		p.Errors = ve.Errors
		p.Detail = fmt.Sprintf("%d problem(s); see errors", len(ve.Errors))
	}
	var ib *domain.InsufficientBalanceError
	if errors.As(err, &ib) {
		p.Required, p.Available = &ib.Required, &ib.Available
		p.Detail = fmt.Sprintf("the order costs %s; %s is available", ib.Required, ib.Available)
	}
	if p.Detail == "" && p.Status != 500 {
		p.Detail = p.Title
	}
	return p, d
}

// writeProblem is the only place that writes an error response.
func writeProblem(w http.ResponseWriter, p Problem, d *detailed) {
	h := w.Header()
	h.Set("Content-Type", "application/problem+json")
	h.Set("Cache-Control", "no-store")
	if p.Status == 401 {
		h.Set("WWW-Authenticate", `Bearer realm="afterok"`)
	}
	retryAfter := time.Duration(0)
	if d != nil {
		retryAfter = d.retryAfter
	}
	if retryAfter <= 0 && p.Status == http.StatusServiceUnavailable {
		retryAfter = unavailableRetryAfter // every 503 says when to come back
	}
	if retryAfter > 0 {
		h.Set("Retry-After", strconv.Itoa(int((retryAfter+time.Second-1)/time.Second)))
	}
	if p.Status == 408 {
		h.Set("Connection", "close") // the rest of the body is not worth waiting for
	}
	if d != nil && d.allow != "" {
		h.Set("Allow", d.allow)
	}
	w.WriteHeader(p.Status)
	_ = json.NewEncoder(w).Encode(p)
}
