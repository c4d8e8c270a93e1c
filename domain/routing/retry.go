package routing

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/afterok/afterok/domain"
)

// RetryPolicy decides whether a failed attempt is tried again, and when.
// The zero value never retries; start from DefaultRetryPolicy.
type RetryPolicy struct {
	MaxAttempts int           // attempts in total, the first included
	Base        time.Duration // delay before the second attempt, before jitter
	Max         time.Duration // cap on any delay, before jitter
}

// DefaultRetryPolicy returns the policy afterok ships: six attempts, waiting
// about 5 s, 10 s, 20 s, 40 s and 80 s between them. Two and a half minutes
// outlast a provider blip and the breaker's cooldown, yet stay far inside a
// message's validity, so a message that cannot be sent is failed (and
// refunded) promptly rather than at its expiry.
func DefaultRetryPolicy() RetryPolicy {
	return RetryPolicy{MaxAttempts: 6, Base: 5 * time.Second, Max: 5 * time.Minute}
}

// Validate reports a policy that cannot be meant: no attempts, or delays
// that are not positive or whose cap is below the base.
func (p RetryPolicy) Validate() error {
	var errs []error
	if p.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("max attempts must be at least 1, got %d", p.MaxAttempts))
	}
	if p.Base <= 0 {
		errs = append(errs, fmt.Errorf("base delay must be positive, got %v", p.Base))
	}
	if p.Max < p.Base {
		errs = append(errs, fmt.Errorf("max delay %v is below the base delay %v", p.Max, p.Base))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("routing: retry policy: %w", err)
	}
	return nil
}

// RetryInput describes the attempt that just failed.
type RetryInput struct {
	MessageID string
	Attempt   int // the attempt that failed, 1-based
	Failure   domain.Failure
	Now       time.Time // when the failure was recorded
	ExpiresAt time.Time // end of the message's validity; zero means none
}

// RetryDecision is the outcome of RetryPolicy.Next.
type RetryDecision struct {
	Retry       bool
	NextAttempt int       // when Retry: Attempt+1
	NotBefore   time.Time // when Retry: the earliest time to start the next attempt
	// Final, when !Retry, is the failure to record as the message's last word.
	Final domain.Failure
}

// Next decides what follows a failed attempt, in this order:
//
//   - a permanent failure is final as it is;
//   - once MaxAttempts attempts failed, the message fails with
//     CodeAttemptsExhausted, keeping the last failure's stage and provider;
//   - otherwise the next attempt waits min(Max, Base·2^(Attempt-1)) with
//     equal jitter, i.e. a delay d becomes a value in [d/2, d]: half is
//     kept so backoff still grows, half is spread so messages that failed
//     together do not retry together;
//   - if that wait reaches ExpiresAt, the message fails with CodeExpired now
//     rather than being scheduled for an attempt it could not make.
//
// The jitter is drawn from MessageID and Attempt, never from a global random
// source, so the schedule is derived from the attempt number and a replay
// computes the same one. An Attempt below 1 is treated as 1.
func (p RetryPolicy) Next(in RetryInput) RetryDecision {
	last := in.Failure
	if last.Permanent {
		return RetryDecision{Final: last}
	}
	attempt := max(in.Attempt, 1)
	if attempt >= p.MaxAttempts {
		return RetryDecision{Final: domain.Failure{
			Code:         domain.CodeAttemptsExhausted,
			Reason:       fmt.Sprintf("%d attempts failed; the last: %s", attempt, describe(last)),
			Stage:        last.Stage,
			Permanent:    true,
			Provider:     last.Provider,
			ProviderCode: last.ProviderCode,
		}}
	}

	notBefore := in.Now.Add(p.delay(in.MessageID, attempt))
	if !in.ExpiresAt.IsZero() && !notBefore.Before(in.ExpiresAt) {
		return RetryDecision{Final: domain.Failure{
			Code: domain.CodeExpired,
			Reason: fmt.Sprintf("validity ends at %s, before attempt %d could start at %s; the last failure: %s",
				in.ExpiresAt.UTC().Format(time.RFC3339), attempt+1, notBefore.UTC().Format(time.RFC3339), describe(last)),
			Stage:        domain.StageExpiry,
			Permanent:    true,
			Provider:     last.Provider,
			ProviderCode: last.ProviderCode,
		}}
	}
	return RetryDecision{Retry: true, NextAttempt: attempt + 1, NotBefore: notBefore}
}

// AfterFailure is the one place that decides what a failed attempt of m
// leads to, whoever saw it fail (a dispatch worker at routing or
// submission, the receipt intake from a delivery receipt): Next's decision
// turned into the message's event, MessageRetried{NotBefore} or
// MessageFailed{Final}. Both must decide alike, or a message's retry
// budget and its expiry would depend on which of them saw the failure.
// receipt is the raw receipt that reported the failure, if one did.
func (p RetryPolicy) AfterFailure(m *domain.Message, attempt int, f domain.Failure, receipt json.RawMessage, now time.Time) (domain.Event, error) {
	d := p.Next(RetryInput{MessageID: m.ID, Attempt: attempt, Failure: f, Now: now, ExpiresAt: m.ExpiresAt})
	if d.Retry {
		return m.Retry(attempt, f, d.NotBefore, receipt, now)
	}
	return m.Fail(attempt, d.Final, receipt, now)
}

// delay is the jittered wait after the given failed attempt. The doubling is
// computed by shifting only while it provably stays below Max, so a huge
// attempt number saturates at Max instead of overflowing into a negative or
// zero delay.
func (p RetryPolicy) delay(messageID string, attempt int) time.Duration {
	d := p.Max
	if p.Base <= 0 {
		d = 0
	} else if shift := attempt - 1; shift < 62 && p.Base <= p.Max>>shift {
		d = p.Base << shift
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	spread := uint64(d-half) + 1 // jitter in [0, d-half], so the delay is in [half, d]
	return half + time.Duration(draw(purposeRetry, messageID, attempt)%spread)
}

func describe(f domain.Failure) string {
	s := f.Code
	if f.Provider != "" {
		s += " at " + f.Provider
	}
	if f.Reason != "" {
		s += " (" + f.Reason + ")"
	}
	return s
}
