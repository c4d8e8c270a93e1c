package receipts

import (
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/provider"
)

// Disposition is what the intake did with a receipt, as recorded in the
// receipts table.
type Disposition string

// The dispositions.
const (
	// Applied: the receipt acted on its message: it caused an event, or it
	// was counted as one part of a message still waiting for its other parts.
	Applied Disposition = "applied"
	// Parked: the message's submission of that attempt is not recorded yet;
	// the receipt waits and is applied, in arrival order, once it is.
	Parked Disposition = "parked"
	// Ignored: the receipt cannot act on its message; Reason says why.
	Ignored Disposition = "ignored"
)

// Reason says why a receipt was ignored.
type Reason string

// The reasons.
const (
	// ReasonFinalState: the message is delivered or failed; a late receipt
	// never changes a final state.
	ReasonFinalState Reason = "final_state"
	// ReasonStaleAttempt: the receipt is for an attempt the message has
	// moved past (a later attempt started, or this one was already retried).
	ReasonStaleAttempt Reason = "stale_attempt"
	// ReasonUnknownMessage: no such message. A message's stream exists from
	// the moment its order is accepted, long before anything is sent, so no
	// later event can make such a receipt applicable: it is kept for
	// support, not parked.
	ReasonUnknownMessage Reason = "unknown_message"
	// ReasonDuplicate: the same fact (attempt, part, status) was already
	// applied or parked for the message.
	ReasonDuplicate Reason = "duplicate"
	// ReasonProviderMismatch: the receipt's provider or provider message id
	// is not the one the attempt was submitted to, so an authenticated
	// provider cannot settle another provider's messages.
	ReasonProviderMismatch Reason = "provider_mismatch"
)

// entry is one receipt being decided: one of this request's, or (id > 0)
// a parked one being looked at again.
type entry struct {
	id          int64
	receipt     provider.Receipt
	disposition Disposition
	reason      Reason
	// event is the id of the event this receipt caused, if any.
	event uuid.UUID
	// lostDelivery marks a delivered receipt for an attempt that was
	// already given up: the handset may get the message twice.
	lostDelivery bool
}

// fact is what makes two receipts the same receipt. The provider that
// sent it is part of it: without it, a receipt another provider sent (and
// signed with its own, valid secret) for the same attempt, part and status
// would, once parked, make the genuine receipt look like its duplicate and
// suppress it.
type fact struct {
	provider      string
	attempt, part int
	status        provider.ReceiptStatus
}

func factOf(r provider.Receipt) fact {
	return fact{provider: r.Provider, attempt: r.Attempt, part: r.Part, status: r.Status}
}

// book is one message as the intake sees it while deciding: the aggregate
// folded from its stream, and what earlier receipts already established.
type book struct {
	msg    domain.Message
	exists bool
	// loaded is the stream version the decisions are based on.
	loaded int
	// seen holds the facts of applied and parked receipts.
	seen map[fact]bool
	// delivered holds, per attempt, the parts with an applied delivered
	// receipt; parts the largest part count any applied receipt gave.
	delivered map[int]map[int]bool
	parts     map[int]int
	// events are the events to append, resolved the event that settled
	// each attempt (to link the attempt's counted parts to it).
	events   []eventstore.EventData
	resolved map[int]uuid.UUID
}

func newBook(msg domain.Message, exists bool) *book {
	return &book{msg: msg, exists: exists, loaded: msg.Version, seen: map[fact]bool{},
		delivered: map[int]map[int]bool{}, parts: map[int]int{}, resolved: map[int]uuid.UUID{}}
}

// count records an applied receipt's contribution to its attempt.
func (b *book) count(r provider.Receipt) {
	b.seen[factOf(r)] = true
	b.parts[r.Attempt] = max(b.parts[r.Attempt], r.Parts)
	if r.Status == provider.ReceiptDelivered {
		got := b.delivered[r.Attempt]
		if got == nil {
			got = map[int]bool{}
			b.delivered[r.Attempt] = got
		}
		got[r.Part] = true
	}
}

// complete reports whether every part of attempt has been delivered.
func (b *book) complete(attempt int) bool {
	return len(b.delivered[attempt]) >= b.parts[attempt]
}

// classify decides what a receipt can do to its message now. The order of
// the checks is the policy:
//
//   - a receipt for a message that does not exist is ignored (unknown_message);
//   - the same fact twice is ignored (duplicate), whatever the state: a
//     provider that retries a callback, or two callbacks racing, must not
//     count a part twice or park a receipt twice (a fact includes the
//     provider, so one provider's receipt is never another's duplicate);
//   - a final message ignores every other receipt (final_state);
//   - an attempt the message has moved past is ignored (stale_attempt):
//     an older attempt, or the current one after it was already retried;
//   - a receipt from another provider than the one the current attempt was
//     routed to is ignored (provider_mismatch) as soon as that provider is
//     known, that is from MessageRouted on: it is never parked;
//   - an attempt whose submission is not recorded yet is parked: a later
//     attempt than the message's (its provider is not chosen yet; the
//     check above runs again when it is), or the current one while queued
//     or routed;
//   - a receipt with another provider message id than the submission's is
//     ignored (provider_mismatch);
//   - otherwise the message is submitted at this attempt: apply it.
func classify(b *book, r provider.Receipt) (Disposition, Reason) {
	m := &b.msg
	routed := m.State == domain.StateRouted || m.State == domain.StateSubmitted
	switch {
	case !b.exists:
		return Ignored, ReasonUnknownMessage
	case b.seen[factOf(r)]:
		return Ignored, ReasonDuplicate
	case m.State.Final():
		return Ignored, ReasonFinalState
	case r.Attempt < m.Attempt, r.Attempt == m.Attempt && m.State == domain.StateRetried:
		return Ignored, ReasonStaleAttempt
	case r.Attempt == m.Attempt && routed && r.Provider != m.Provider:
		return Ignored, ReasonProviderMismatch
	case r.Attempt > m.Attempt, m.State != domain.StateSubmitted:
		return Parked, ""
	case r.ProviderMessageID != m.ProviderMessageID:
		return Ignored, ReasonProviderMismatch
	}
	return Applied, ""
}

// decider turns receipts into dispositions and events. It is pure: the
// clock reading, the policy and the request id are given.
type decider struct {
	policy routing.RetryPolicy
	now    time.Time
	trace  string
}

// decide settles e against its message's book, folding any event it causes
// into the book so that the next receipt of the same message sees it.
func (d *decider) decide(b *book, e *entry) error {
	r := e.receipt
	e.disposition, e.reason = classify(b, r)
	switch e.disposition {
	case Parked:
		b.seen[factOf(r)] = true
		return nil
	case Ignored:
		e.lostDelivery = e.reason == ReasonStaleAttempt && r.Status == provider.ReceiptDelivered
		return nil
	}
	b.count(r)
	ev, err := d.event(b, r)
	if err == nil && ev != nil {
		err = b.msg.Apply(ev)
	}
	if err != nil {
		// classify ruled out every step the lifecycle refuses; a refusal
		// here means the two disagree: a bug to surface, not a receipt to drop.
		return fmt.Errorf("receipt for message %s attempt %d: %w", r.MessageID, r.Attempt, err)
	}
	if ev == nil {
		return nil
	}
	data := eventstore.MustEvent(ev, eventstore.Metadata{
		AccountID:     b.msg.AccountID,
		CorrelationID: b.msg.OrderID,
		CausationID:   r.ProviderMessageID,
		Actor:         "provider:" + r.Provider,
		TraceID:       d.trace,
	})
	b.events = append(b.events, data)
	b.resolved[r.Attempt] = data.ID
	e.event = data.ID
	return nil
}

// event is the event an applicable receipt causes, or nil for a delivered
// part whose siblings have not all been delivered yet. This is the
// multipart rule (see the package documentation): delivered once every
// part is, failed as soon as one part fails permanently, retried (or
// failed, as the retry policy says) as soon as one part fails transiently.
func (d *decider) event(b *book, r provider.Receipt) (domain.Event, error) {
	m := &b.msg
	switch r.Status {
	case provider.ReceiptDelivered:
		if !b.complete(r.Attempt) {
			return nil, nil
		}
		return m.Deliver(r.Attempt, r.Raw, r.DoneAt, d.now)
	case provider.ReceiptFailed, provider.ReceiptRetry:
		// The receipt's failure says whether it is permanent; the policy
		// decides the rest, as it does for the workers' failures.
		return d.policy.AfterFailure(m, r.Attempt, failureOf(r), r.Raw, d.now)
	}
	return nil, fmt.Errorf("receipt for message %s: unknown status %q", r.MessageID, r.Status)
}

// failureOf is the receipt's failure. ParseReceipts always sets one for a
// failed or retry receipt and the table refuses a row without; the
// fallback only keeps a broken invariant from becoming a nil dereference.
func failureOf(r provider.Receipt) domain.Failure {
	if r.Failure != nil {
		f := *r.Failure
		// A failed receipt is final by its status's definition, whatever
		// its adapter put in the failure.
		f.Permanent = f.Permanent || r.Status == provider.ReceiptFailed
		return f
	}
	return domain.Failure{Code: domain.CodeUndeliverable, Reason: "provider reported " + string(r.Status),
		Stage: domain.StageDelivery, Permanent: r.Status == provider.ReceiptFailed, Provider: r.Provider}
}
