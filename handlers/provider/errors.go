package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/afterok/afterok/domain"
)

// Error is a submission that did not succeed. Failure is already normalized
// (Stage submit); callers decide on retries and failover from
// Failure.Permanent and Failure.Code alone, never from the provider's words.
type Error struct {
	Failure domain.Failure
	// StatusCode is the HTTP status of the answer that carried the failure;
	// 0 when no answer arrived or the failure was one item of a batch answer.
	StatusCode int
	// RetryAfter is the provider's own hint (429 Retry-After), 0 if none.
	RetryAfter time.Duration
	// Err is the underlying transport or context error, if any, so that
	// errors.Is(err, context.DeadlineExceeded) keeps working.
	Err error
}

// Error describes the failure for logs: provider, permanence, code, reason.
func (e *Error) Error() string {
	kind := "transient"
	if e.Failure.Permanent {
		kind = "permanent"
	}
	msg := fmt.Sprintf("provider %s: %s %s failure %s", e.Failure.Provider, kind, e.Failure.Stage, e.Failure.Code)
	if e.Failure.Reason != "" {
		msg += ": " + e.Failure.Reason
	}
	return msg
}

// Unwrap exposes the transport or context error behind the failure.
func (e *Error) Unwrap() error { return e.Err }

// The sandbox protocol's error codes, as providers send them.
const (
	wireInvalidDestination = "invalid_destination"
	wireRejected           = "rejected"
	wireThrottled          = "throttled"
	wireUnavailable        = "unavailable"
	wireTimeout            = "timeout"
	wireUnauthorized       = "unauthorized"
)

// classify is the one table from a provider's answer to afterok's failure
// taxonomy. A known provider code wins; otherwise the HTTP status decides; a
// batch item (status 0) with an unknown code falls back on its retryable flag.
//
//	provider code        HTTP status                 normalized code       permanent
//	invalid_destination  (sent with 400)             invalid_destination   yes
//	rejected             400, 422, every other 4xx   rejected              yes
//	throttled            429                         throttled             no
//	timeout              408, 504                    timeout               no
//	unavailable          500-599 except 504          provider_unavailable  no
//	unauthorized         401, 403                    provider_unavailable  no
//	(batch item)         retryable: true / false     provider_unavailable / rejected
//	(anything else)      1xx, 3xx, unreadable 2xx    provider_unavailable  no
//	transport error      none                        provider_unavailable  no
//	deadline, cancel     none                        timeout               no
//
// Unauthorized is transient on purpose: a wrong API key is our configuration
// error, not the message's fault, so the message should fail over to another
// route (and eventually exhaust its attempts) rather than be refunded as
// undeliverable; the failure's Reason tells the operator what to fix. An
// unknown 4xx is permanent because resending the same request cannot change
// the answer, but only the provider's code can say the number itself is bad,
// so a bare 400 is "rejected", not "invalid_destination". The last two rows are built by transportError.
func classify(code string, status int, retryable *bool) (normalized string, permanent bool) {
	switch code {
	case wireInvalidDestination:
		return domain.CodeInvalidDestination, true
	case wireRejected:
		return domain.CodeRejected, true
	case wireThrottled:
		return domain.CodeThrottled, false
	case wireTimeout:
		return domain.CodeTimeout, false
	case wireUnavailable, wireUnauthorized:
		return domain.CodeProviderUnavailable, false
	}
	switch {
	case status == http.StatusTooManyRequests:
		return domain.CodeThrottled, false
	case status == http.StatusRequestTimeout, status == http.StatusGatewayTimeout:
		return domain.CodeTimeout, false
	case status == http.StatusUnauthorized, status == http.StatusForbidden:
		return domain.CodeProviderUnavailable, false
	case status >= 400 && status < 500:
		return domain.CodeRejected, true
	case status == 0 && retryable != nil && !*retryable:
		return domain.CodeRejected, true
	}
	return domain.CodeProviderUnavailable, false
}

// answerError builds the Error for an answer the provider gave: a non-2xx
// response (status > 0) or a failed batch item (status 0).
func answerError(provider string, status int, code, message string, retryable *bool, retryAfter time.Duration) *Error {
	normalized, permanent := classify(code, status, retryable)
	providerCode := code
	if providerCode == "" && status > 0 {
		providerCode = "http_" + strconv.Itoa(status)
	}
	reason := message
	if reason == "" && status > 0 {
		reason = http.StatusText(status)
	}
	if code == wireUnauthorized || status == http.StatusUnauthorized || status == http.StatusForbidden {
		reason = "provider refused our credentials (check the API key): " + reason
	}
	return &Error{
		Failure:    submitFailure(provider, normalized, permanent, reason, providerCode),
		StatusCode: status,
		RetryAfter: retryAfter,
	}
}

// transportError builds the Error for a request that got no answer. Whether
// the provider accepted the message is unknown: resubmitting the same attempt
// (same idempotency key) is the safe way to find out.
func transportError(provider string, err error) *Error {
	code := domain.CodeProviderUnavailable
	var netErr net.Error
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) ||
		(errors.As(err, &netErr) && netErr.Timeout()) {
		code = domain.CodeTimeout
	}
	return &Error{
		Failure: submitFailure(provider, code, false, "no answer: "+err.Error(), ""),
		Err:     err,
	}
}

// malformedError builds the Error for an answer we could not understand. It
// is transient: the provider may well have accepted the message, and a
// resubmission of the same attempt will replay its answer.
func malformedError(provider string, status int, what string) *Error {
	return &Error{
		Failure:    submitFailure(provider, domain.CodeProviderUnavailable, false, "malformed answer: "+what, ""),
		StatusCode: status,
	}
}

func submitFailure(provider, code string, permanent bool, reason, providerCode string) domain.Failure {
	return domain.Failure{
		Code:         code,
		Reason:       reason,
		Stage:        domain.StageSubmit,
		Permanent:    permanent,
		Provider:     provider,
		ProviderCode: providerCode,
	}
}

// parseRetryAfter reads a Retry-After header in either of its two forms
// (delay-seconds or an HTTP date); 0 means absent or unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
