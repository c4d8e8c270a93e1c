package routing_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
)

var (
	timeout = domain.Failure{Code: domain.CodeTimeout, Reason: "no answer in 10s", Stage: domain.StageSubmit,
		Provider: "sim-a", ProviderCode: "ETIMEDOUT"}
	invalid = domain.Failure{Code: domain.CodeInvalidDestination, Reason: "unknown subscriber", Stage: domain.StageSubmit,
		Permanent: true, Provider: "sim-b", ProviderCode: "21211"}
)

func TestRetryNext(t *testing.T) {
	p := routing.RetryPolicy{MaxAttempts: 3, Base: 10 * time.Second, Max: time.Minute}
	tests := []struct {
		name   string
		policy routing.RetryPolicy
		in     routing.RetryInput
		// For a retry: the attempt and the window NotBefore must fall in.
		wantAttempt    int
		wantEarliest   time.Duration
		wantLatest     time.Duration
		wantFinal      domain.Failure // for no retry
		reasonContains []string
	}{
		{name: "a transient failure is retried after Base with jitter", policy: p,
			in:          routing.RetryInput{MessageID: "m1", Attempt: 1, Failure: timeout, Now: t0, ExpiresAt: t0.Add(time.Hour)},
			wantAttempt: 2, wantEarliest: 5 * time.Second, wantLatest: 10 * time.Second},
		{name: "the second retry waits twice as long", policy: p,
			in:          routing.RetryInput{MessageID: "m1", Attempt: 2, Failure: timeout, Now: t0, ExpiresAt: t0.Add(time.Hour)},
			wantAttempt: 3, wantEarliest: 10 * time.Second, wantLatest: 20 * time.Second},
		{name: "no expiry means no cut-off", policy: p,
			in:          routing.RetryInput{MessageID: "m1", Attempt: 1, Failure: timeout, Now: t0},
			wantAttempt: 2, wantEarliest: 5 * time.Second, wantLatest: 10 * time.Second},
		{name: "an attempt below 1 counts as the first", policy: p,
			in:          routing.RetryInput{MessageID: "m1", Attempt: 0, Failure: timeout, Now: t0},
			wantAttempt: 2, wantEarliest: 5 * time.Second, wantLatest: 10 * time.Second},
		{name: "a transient routing failure is retried", policy: p,
			in: routing.RetryInput{MessageID: "m1", Attempt: 1, Now: t0,
				Failure: domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageRouting}},
			wantAttempt: 2, wantEarliest: 5 * time.Second, wantLatest: 10 * time.Second},
		{name: "a permanent failure is final as it is", policy: p,
			in:        routing.RetryInput{MessageID: "m1", Attempt: 1, Failure: invalid, Now: t0, ExpiresAt: t0.Add(time.Hour)},
			wantFinal: invalid},
		{name: "a permanent failure on the last attempt keeps its own code", policy: p,
			in:        routing.RetryInput{MessageID: "m1", Attempt: 3, Failure: invalid, Now: t0},
			wantFinal: invalid},
		{name: "the last attempt exhausts the budget", policy: p,
			in: routing.RetryInput{MessageID: "m1", Attempt: 3, Failure: timeout, Now: t0, ExpiresAt: t0.Add(time.Hour)},
			wantFinal: domain.Failure{Code: domain.CodeAttemptsExhausted, Stage: domain.StageSubmit, Permanent: true,
				Provider: "sim-a", ProviderCode: "ETIMEDOUT"},
			reasonContains: []string{"3 attempts failed", "timeout at sim-a (no answer in 10s)"}},
		{name: "beyond the budget too", policy: p,
			in: routing.RetryInput{MessageID: "m1", Attempt: 7, Failure: timeout, Now: t0},
			wantFinal: domain.Failure{Code: domain.CodeAttemptsExhausted, Stage: domain.StageSubmit, Permanent: true,
				Provider: "sim-a", ProviderCode: "ETIMEDOUT"},
			reasonContains: []string{"7 attempts failed"}},
		{name: "the zero policy never retries", policy: routing.RetryPolicy{},
			in: routing.RetryInput{MessageID: "m1", Attempt: 1, Failure: timeout, Now: t0},
			wantFinal: domain.Failure{Code: domain.CodeAttemptsExhausted, Stage: domain.StageSubmit, Permanent: true,
				Provider: "sim-a", ProviderCode: "ETIMEDOUT"},
			reasonContains: []string{"1 attempts failed"}},
		{name: "a retry that cannot start before expiry expires now", policy: p,
			in: routing.RetryInput{MessageID: "m1", Attempt: 2, Failure: timeout, Now: t0, ExpiresAt: t0.Add(10 * time.Second)},
			wantFinal: domain.Failure{Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true,
				Provider: "sim-a", ProviderCode: "ETIMEDOUT"},
			reasonContains: []string{"validity ends at 2026-03-01T12:00:10Z", "before attempt 3", "timeout at sim-a"}},
		{name: "already expired", policy: p,
			in: routing.RetryInput{MessageID: "m1", Attempt: 1, Failure: timeout, Now: t0, ExpiresAt: t0.Add(-time.Second)},
			wantFinal: domain.Failure{Code: domain.CodeExpired, Stage: domain.StageExpiry, Permanent: true,
				Provider: "sim-a", ProviderCode: "ETIMEDOUT"},
			reasonContains: []string{"validity ends"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := tt.policy.Next(tt.in)
			if tt.wantAttempt > 0 {
				wait := got.NotBefore.Sub(tt.in.Now)
				if !got.Retry || got.NextAttempt != tt.wantAttempt || wait < tt.wantEarliest || wait > tt.wantLatest ||
					got.Final != (domain.Failure{}) {
					t.Fatalf("Next = %+v (wait %v), want retry %d after %v..%v", got, wait, tt.wantAttempt, tt.wantEarliest, tt.wantLatest)
				}
				return
			}
			if got.Retry || got.NextAttempt != 0 || !got.NotBefore.IsZero() {
				t.Fatalf("Next = %+v, want no retry", got)
			}
			reason := got.Final.Reason
			if len(tt.reasonContains) > 0 {
				got.Final.Reason = ""
			}
			if !reflect.DeepEqual(got.Final, tt.wantFinal) {
				t.Errorf("Final\n got %+v\nwant %+v", got.Final, tt.wantFinal)
			}
			for _, w := range tt.reasonContains {
				if !strings.Contains(reason, w) {
					t.Errorf("reason %q does not say %q", reason, w)
				}
			}
		})
	}
}

// TestRetryBackoff checks every delay against its bounds, that the jitter
// spreads messages across the bounds and that backoff grows with attempts.
func TestRetryBackoff(t *testing.T) {
	p := routing.RetryPolicy{MaxAttempts: math.MaxInt, Base: time.Second, Max: 5 * time.Minute}
	const ids = 1000
	prev := make([]time.Duration, ids) // each message's delay at the previous attempt
	for attempt := 1; attempt <= 14; attempt++ {
		full := min(p.Max, p.Base<<(attempt-1))
		lo, hi := full/2, full
		seen := map[time.Duration]bool{}
		least, most := hi, lo
		for i := range ids {
			d := p.Next(routing.RetryInput{MessageID: fmt.Sprintf("01JDQ5W2G3%016d", i), Attempt: attempt, Failure: timeout, Now: t0})
			wait := d.NotBefore.Sub(t0)
			if !d.Retry || wait < lo || wait > hi {
				t.Fatalf("attempt %d, message %d: %+v waits %v, want %v..%v", attempt, i, d, wait, lo, hi)
			}
			// Below the cap this attempt's range starts where the last one's
			// ended, so every message waits at least as long as before.
			if p.Base<<(attempt-1) <= p.Max && wait < prev[i] {
				t.Fatalf("attempt %d, message %d waits %v, less than %v before", attempt, i, wait, prev[i])
			}
			prev[i] = wait
			seen[wait] = true
			least, most = min(least, wait), max(most, wait)
		}
		if len(seen) < ids*9/10 {
			t.Errorf("attempt %d: only %d distinct delays among %d messages", attempt, len(seen), ids)
		}
		if spread := hi - lo; least > lo+spread/10 || most < hi-spread/10 {
			t.Errorf("attempt %d: delays span %v..%v, want most of %v..%v", attempt, least, most, lo, hi)
		}
	}
}

// TestRetryHugeAttempts guards the doubling against overflow: a shift past 63
// bits would turn the delay negative or zero and retry at once, forever. At
// the cap the jitter must still change from attempt to attempt, or a message
// would settle into a fixed retry period.
func TestRetryHugeAttempts(t *testing.T) {
	p := routing.RetryPolicy{MaxAttempts: math.MaxInt, Base: 3 * time.Second, Max: 10 * time.Minute}
	attempts := []int{20, 62, 63, 64, 65, 100, 1 << 40, math.MaxInt - 1}
	seen := map[time.Duration]bool{}
	for _, attempt := range attempts {
		d := p.Next(routing.RetryInput{MessageID: "m1", Attempt: attempt, Failure: timeout, Now: t0})
		wait := d.NotBefore.Sub(t0)
		if !d.Retry || wait < p.Max/2 || wait > p.Max || d.NextAttempt != attempt+1 {
			t.Errorf("attempt %d: %+v waits %v, want retry %d after %v..%v", attempt, d, wait, attempt+1, p.Max/2, p.Max)
		}
		seen[wait] = true
	}
	if len(seen) < len(attempts)-1 {
		t.Errorf("capped delays of one message repeat: %d distinct in %d attempts", len(seen), len(attempts))
	}
}

// TestRetryExpiryCutOff pins the boundary: a retry whose earliest start is
// the expiry instant cannot happen, one a nanosecond earlier can.
func TestRetryExpiryCutOff(t *testing.T) {
	p := routing.DefaultRetryPolicy()
	in := routing.RetryInput{MessageID: "m1", Attempt: 2, Failure: timeout, Now: t0}
	at := p.Next(in).NotBefore
	tests := []struct {
		expires time.Time
		retry   bool
	}{
		{at.Add(-time.Nanosecond), false},
		{at, false},
		{at.Add(time.Nanosecond), true},
	}
	for _, tt := range tests {
		in.ExpiresAt = tt.expires
		d := p.Next(in)
		if d.Retry != tt.retry || (!d.Retry && d.Final.Code != domain.CodeExpired) || (d.Retry && !d.NotBefore.Equal(at)) {
			t.Errorf("expiry %v after the next start: %+v, want retry=%v", tt.expires.Sub(at), d, tt.retry)
		}
	}
}

func TestRetryPolicyValidate(t *testing.T) {
	tests := []struct {
		name    string
		policy  routing.RetryPolicy
		wantErr string
	}{
		{"default", routing.DefaultRetryPolicy(), ""},
		{"a single attempt", routing.RetryPolicy{MaxAttempts: 1, Base: time.Second, Max: time.Second}, ""},
		{"no attempts", routing.RetryPolicy{Base: time.Second, Max: time.Second}, "max attempts"},
		{"no base", routing.RetryPolicy{MaxAttempts: 3, Max: time.Second}, "base delay"},
		{"cap below base", routing.RetryPolicy{MaxAttempts: 3, Base: time.Minute, Max: time.Second}, "below the base"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.policy.Validate()
			if (tt.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("Validate() = %v, want an error about %q", err, tt.wantErr)
			}
		})
	}
}
