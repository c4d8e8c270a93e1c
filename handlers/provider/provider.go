package provider

import (
	"context"
	"strconv"
	"time"
)

// Submission is one attempt at sending one message through one provider.
type Submission struct {
	MessageID string
	// Attempt counts from 1. It is part of the idempotency key, so a new
	// attempt is deliberately a new send while a repeat of the same attempt
	// is not.
	Attempt  int
	To       string
	From     string
	Body     string
	Segments int // at least 1; the simulator refuses 0 as a malformed request
}

// IdempotencyKey names this attempt for the provider as "<message id>:<attempt>".
// Resubmitting the same attempt (after a timeout, when we cannot know whether
// the provider accepted it) replays the provider's first answer instead of
// sending the SMS twice.
func (s Submission) IdempotencyKey() string {
	return s.MessageID + ":" + strconv.Itoa(s.Attempt)
}

// Result is what a provider returned for an accepted submission.
type Result struct {
	ProviderMessageID string
	// Latency is the time from sending the request to reading the whole
	// answer; every submission of one batch request shares it.
	Latency time.Duration
	// Replayed is true when the provider said this was a replay of an
	// earlier answer for the same idempotency key. The sandbox protocol only
	// says so for single submissions, so it is always false for batches.
	Replayed bool
}

// Outcome is the fate of one submission: a Result, or Err (a *Error).
type Outcome struct {
	Result Result
	Err    error
}

// Provider is what dispatch needs from an SMS provider. Submit is batch-first:
// it returns exactly one Outcome per submission, in the same order, and never
// fails as a whole; an adapter may send one request or several.
type Provider interface {
	Name() string
	Submit(ctx context.Context, batch []Submission) []Outcome
}
