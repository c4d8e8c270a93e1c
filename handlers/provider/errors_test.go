package provider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
)

func TestClassify(t *testing.T) {
	yes, no := true, false
	cases := []struct {
		code      string
		status    int
		retryable *bool
		want      string
		permanent bool
	}{
		{"invalid_destination", 400, nil, domain.CodeInvalidDestination, true},
		{"rejected", 422, nil, domain.CodeRejected, true},
		{"throttled", 429, nil, domain.CodeThrottled, false},
		{"unavailable", 503, nil, domain.CodeProviderUnavailable, false},
		{"timeout", 504, nil, domain.CodeTimeout, false},
		{"unauthorized", 401, nil, domain.CodeProviderUnavailable, false},
		// A known code wins over a status that says otherwise.
		{"throttled", 400, nil, domain.CodeThrottled, false},
		{"invalid_destination", 0, &yes, domain.CodeInvalidDestination, true},
		// Unknown codes: the status decides.
		{"", 400, nil, domain.CodeRejected, true},
		{"bogus", 404, nil, domain.CodeRejected, true},
		{"", 422, nil, domain.CodeRejected, true},
		{"", 429, nil, domain.CodeThrottled, false},
		{"", 408, nil, domain.CodeTimeout, false},
		{"", 504, nil, domain.CodeTimeout, false},
		{"", 401, nil, domain.CodeProviderUnavailable, false},
		{"", 403, nil, domain.CodeProviderUnavailable, false},
		{"", 500, nil, domain.CodeProviderUnavailable, false},
		{"", 502, nil, domain.CodeProviderUnavailable, false},
		{"", 302, nil, domain.CodeProviderUnavailable, false},
		// Batch items with unknown codes: the retryable flag decides.
		{"bogus", 0, &no, domain.CodeRejected, true},
		{"bogus", 0, &yes, domain.CodeProviderUnavailable, false},
		{"bogus", 0, nil, domain.CodeProviderUnavailable, false},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%d", c.code, c.status), func(t *testing.T) {
			got, permanent := classify(c.code, c.status, c.retryable)
			if got != c.want || permanent != c.permanent {
				t.Fatalf("classify(%q, %d) = %s, permanent %v; want %s, permanent %v", c.code, c.status, got, permanent, c.want, c.permanent)
			}
		})
	}
}

func TestAnswerErrorCarriesFailure(t *testing.T) {
	var err error = answerError("sim-a", 400, "invalid_destination", "no such number", nil, 0)
	var pe *Error
	if !errors.As(fmt.Errorf("dispatch: %w", err), &pe) {
		t.Fatal("errors.As does not find *Error")
	}
	want := domain.Failure{
		Code: domain.CodeInvalidDestination, Reason: "no such number", Stage: domain.StageSubmit,
		Permanent: true, Provider: "sim-a", ProviderCode: "invalid_destination",
	}
	if pe.Failure != want || pe.StatusCode != 400 {
		t.Fatalf("got %+v (status %d), want %+v", pe.Failure, pe.StatusCode, want)
	}
	if bare := answerError("sim-a", 502, "", "", nil, 0); bare.Failure.ProviderCode != "http_502" || bare.Failure.Reason != "Bad Gateway" {
		t.Fatalf("a bare status keeps too little: %+v", bare.Failure)
	}
}

func TestTransportError(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"deadline", fmt.Errorf("post: %w", context.DeadlineExceeded), domain.CodeTimeout},
		{"canceled", fmt.Errorf("post: %w", context.Canceled), domain.CodeTimeout},
		{"net timeout", &net.OpError{Op: "dial", Err: timeoutErr{}}, domain.CodeTimeout},
		{"refused", &net.OpError{Op: "dial", Err: errors.New("connection refused")}, domain.CodeProviderUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := transportError("sim-b", c.err)
			if e.Failure.Code != c.want || e.Failure.Permanent || e.Failure.Stage != domain.StageSubmit {
				t.Fatalf("got %+v, want transient %s", e.Failure, c.want)
			}
			if !errors.Is(e, c.err) {
				t.Fatal("the cause is not reachable through errors.Is")
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "i/o timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := map[string]time.Duration{
		"":                              0,
		"7":                             7 * time.Second,
		"-3":                            0,
		"soon":                          0,
		"Thu, 02 Jan 2025 03:04:35 GMT": 30 * time.Second,
		"Thu, 02 Jan 2025 03:00:00 GMT": 0,
	}
	for in, want := range cases {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}
