package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// MessageState is where a message stands in its lifecycle.
type MessageState string

// Message states. Retried is the domain's name for "waiting for the next
// attempt"; read models show it as queued with attempt > 1 (see PublicState).
const (
	StateNew       MessageState = ""
	StateScheduled MessageState = "scheduled"
	StateAccepted  MessageState = "accepted"
	StateQueued    MessageState = "queued"
	StateRouted    MessageState = "routed"
	StateSubmitted MessageState = "submitted"
	StateRetried   MessageState = "retried"
	StateDelivered MessageState = "delivered"
	StateFailed    MessageState = "failed"
	StateCanceled  MessageState = "canceled"
)

// Final reports whether no event may follow this state.
func (s MessageState) Final() bool {
	return s == StateDelivered || s == StateFailed || s == StateCanceled
}

// Cancelable reports whether a message in this state may still be
// canceled: nothing has handed it to a provider's route yet. Once a worker
// recorded MessageRouted the attempt is the worker's, and a cancel is too
// late.
func (s MessageState) Cancelable() bool {
	return slices.Contains(transitions[MessageCanceled{}.EventType()], s)
}

// PublicState is the lower-case name read models and the API show: an
// in-flight retry is "queued" (its attempt number says it is a retry).
func (s MessageState) PublicState() string {
	if s == StateRetried {
		return string(StateQueued)
	}
	return string(s)
}

// ErrIllegalTransition is matched (errors.Is) by every refused lifecycle
// step. ErrFinalState and ErrStaleAttempt refine it.
var (
	ErrIllegalTransition = errors.New("illegal transition")
	ErrFinalState        = errors.New("message is final")
	ErrStaleAttempt      = errors.New("stale attempt")
	// ErrAlreadyRedriven refines ErrIllegalTransition: the failed message
	// was re-driven before, and is re-driven at most once.
	ErrAlreadyRedriven = errors.New("message already re-driven")
)

// TransitionError says which step was refused and why.
type TransitionError struct {
	MessageID string
	From      MessageState
	Event     string
	Detail    string
	kind      error // ErrFinalState, ErrStaleAttempt or nil
}

func (e *TransitionError) Error() string {
	msg := fmt.Sprintf("message %s: %s not allowed in state %q", e.MessageID, e.Event, e.From)
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

// Is makes errors.Is match ErrIllegalTransition and the refinement.
func (e *TransitionError) Is(target error) bool {
	return target == ErrIllegalTransition || (e.kind != nil && target == e.kind)
}

// transitions is the lifecycle, in one place: for each event type, the
// states it may follow. Failed may follow any non-final state because the
// validity can elapse anywhere; Delivered only follows Submitted (a receipt
// that beats its submission is parked by the intake, not applied).
//
// MessageCanceled may follow only the states in which no worker holds the
// message: a cancel and a worker racing for one message are decided by the
// store's expected-version append, and the worker's MessageRouted and the
// cancel's MessageCanceled cannot both follow the same version.
var transitions = map[string][]MessageState{
	MessageAccepted{}.EventType():  {StateNew},
	MessageQueued{}.EventType():    {StateScheduled, StateAccepted, StateRetried},
	MessageRouted{}.EventType():    {StateQueued},
	MessageSubmitted{}.EventType(): {StateRouted},
	MessageDelivered{}.EventType(): {StateSubmitted},
	MessageRetried{}.EventType():   {StateQueued, StateRouted, StateSubmitted},
	MessageFailed{}.EventType():    {StateScheduled, StateAccepted, StateQueued, StateRouted, StateSubmitted, StateRetried},
	MessageCanceled{}.EventType():  {StateScheduled, StateAccepted, StateQueued, StateRetried},
}

// Message is the message aggregate, folded from its stream.
type Message struct {
	ID        string
	OrderID   string
	AccountID string
	Index     int
	To        string
	Country   string
	From      string
	Body      string
	Encoding  string
	Segments  int
	Price     Money
	ExpiresAt time.Time
	// SendAt is when the client asked the message to go out (zero: at once).
	SendAt time.Time

	State MessageState
	// Attempt is the attempt under way (or last made); 0 before the first.
	Attempt int
	// NextAttempt is set while State is Retried.
	NextAttempt int
	NotBefore   time.Time
	// Version is the number of events folded, i.e. the stream version.
	Version int

	Routing           *RouteDecision
	Provider          string
	ProviderMessageID string
	Failure           *Failure
	// Cancel is set once the message was canceled: who and why.
	Cancellation *MessageCanceled
	// RedriveOf is the failed message this one sends again ("" for none);
	// Redriven is set once this (failed) message was re-driven: as what,
	// by whom and why.
	RedriveOf string
	Redriven  *MessageRedriven
	// Excluded lists providers that failed this message; routing skips them
	// for the rest of its attempts.
	Excluded []string

	AcceptedAt, QueuedAt, RoutedAt, SubmittedAt, DeliveredAt, FailedAt, RetriedAt, CanceledAt time.Time
}

// LoadMessage folds a message stream from its first event.
func LoadMessage(events []Event) (Message, error) {
	var m Message
	for _, e := range events {
		if err := m.Apply(e); err != nil {
			return Message{}, err
		}
	}
	return m, nil
}

// DisplayAttempt is the attempt number to show: the pending one while a
// retry waits, otherwise the current one.
func (m *Message) DisplayAttempt() int {
	if m.State == StateRetried {
		return m.NextAttempt
	}
	return m.Attempt
}

func (m *Message) check(eventType string, attempt int) error {
	if m.State.Final() {
		return &TransitionError{MessageID: m.ID, From: m.State, Event: eventType, kind: ErrFinalState}
	}
	if !slices.Contains(transitions[eventType], m.State) {
		return &TransitionError{MessageID: m.ID, From: m.State, Event: eventType}
	}
	if attempt != m.Attempt && eventType != (MessageQueued{}).EventType() && eventType != (MessageAccepted{}).EventType() &&
		eventType != (MessageCanceled{}).EventType() {
		return &TransitionError{MessageID: m.ID, From: m.State, Event: eventType, kind: ErrStaleAttempt,
			Detail: fmt.Sprintf("event is for attempt %d, message is at attempt %d", attempt, m.Attempt)}
	}
	return nil
}

func (m *Message) nextAttempt() int {
	if m.State == StateRetried {
		return m.NextAttempt
	}
	return m.Attempt + 1
}

// Queue records that the job for the next attempt is stored on the queue.
func (m *Message) Queue(jobID string, at time.Time) (MessageQueued, error) {
	e := MessageQueued{Attempt: m.nextAttempt(), JobID: jobID, At: at}
	return e, m.check(e.EventType(), e.Attempt)
}

// Route records the routing decision for the current attempt.
func (m *Message) Route(d RouteDecision, at time.Time) (MessageRouted, error) {
	e := MessageRouted{Attempt: m.Attempt, Route: d, At: at}
	if err := m.check(e.EventType(), e.Attempt); err != nil {
		return e, err
	}
	if d.Provider == "" {
		return e, &TransitionError{MessageID: m.ID, From: m.State, Event: e.EventType(), Detail: "route without provider"}
	}
	return e, nil
}

// Submit records the provider's acceptance of the current attempt.
func (m *Message) Submit(providerMessageID string, latency time.Duration, at time.Time) (MessageSubmitted, error) {
	e := MessageSubmitted{Attempt: m.Attempt, ProviderMessageID: providerMessageID, LatencyMillis: latency.Milliseconds(), At: at}
	if err := m.check(e.EventType(), e.Attempt); err != nil {
		return e, err
	}
	e.Provider = m.Provider
	if providerMessageID == "" {
		return e, &TransitionError{MessageID: m.ID, From: m.State, Event: e.EventType(), Detail: "empty provider message id"}
	}
	return e, nil
}

// Deliver applies a delivery receipt for attempt.
func (m *Message) Deliver(attempt int, receipt json.RawMessage, doneAt, at time.Time) (MessageDelivered, error) {
	e := MessageDelivered{Attempt: attempt, Provider: m.Provider, ProviderMessageID: m.ProviderMessageID,
		DoneAt: doneAt, Receipt: receipt, At: at}
	return e, m.check(e.EventType(), attempt)
}

// Fail ends the message with a permanent failure of attempt.
func (m *Message) Fail(attempt int, f Failure, receipt json.RawMessage, at time.Time) (MessageFailed, error) {
	f.Permanent = true
	e := MessageFailed{Attempt: attempt, Failure: f, Receipt: receipt, At: at}
	return e, m.check(e.EventType(), attempt)
}

// Expired reports whether the message's validity has ended at now: from
// then on no attempt may start, and a message not yet final is failed by
// Expire.
func (m *Message) Expired(now time.Time) bool { return !now.Before(m.ExpiresAt) }

// Expire ends the message, at its current attempt, because its validity
// ended before a final state: MessageFailed{expired, stage expiry}, the one
// shape of that failure whoever notices it (the dispatch worker before an
// attempt, the scheduler's expiry round).
func (m *Message) Expire(now time.Time) (MessageFailed, error) {
	return m.Fail(m.Attempt, Failure{Code: CodeExpired, Stage: StageExpiry,
		Reason: fmt.Sprintf("validity ended at %s before a final state (%s)",
			m.ExpiresAt.UTC().Format(time.RFC3339), m.State.PublicState())}, nil, now)
}

// Cancel ends a message that no worker holds yet, on behalf of actor (an
// API key id) for reason. It is refused with ErrIllegalTransition once the
// message is routed, submitted or final.
func (m *Message) Cancel(actor, reason string, at time.Time) (MessageCanceled, error) {
	e := MessageCanceled{Attempt: m.Attempt, Actor: actor, Reason: reason, At: at}
	return e, m.check(e.EventType(), e.Attempt)
}

// Redrivable reports whether Redrive would be allowed: the message failed
// and was not re-driven yet.
func (m Message) Redrivable() bool { return m.checkRedrive() == nil }

// checkRedrive is the one rule for MessageRedriven. It is the only event
// that may follow a final state, and only Failed: the message stays
// failed (its refund is the tracker's, already made or under way), the
// event only records where its copy went. Once, so that two re-drives
// can never both send a copy.
func (m *Message) checkRedrive() error {
	ev := MessageRedriven{}.EventType()
	switch {
	case m.State == StateFailed && m.Redriven != nil:
		return &TransitionError{MessageID: m.ID, From: m.State, Event: ev, kind: ErrAlreadyRedriven,
			Detail: "re-driven already as " + m.Redriven.RedrivenAs}
	case m.State == StateFailed:
		return nil
	case m.State.Final():
		return &TransitionError{MessageID: m.ID, From: m.State, Event: ev, kind: ErrFinalState, Detail: "only a failed message can be re-driven"}
	}
	return &TransitionError{MessageID: m.ID, From: m.State, Event: ev, Detail: "only a failed message can be re-driven"}
}

// Redrive records that the failed message is sent again as the message
// redrivenAs of the new order orderID, on behalf of actor (an API key id)
// for reason (required). It is refused with ErrIllegalTransition unless
// the message failed, and with ErrAlreadyRedriven (which refines it) the
// second time.
func (m *Message) Redrive(redrivenAs, orderID, actor, reason string, at time.Time) (MessageRedriven, error) {
	e := MessageRedriven{RedrivenAs: redrivenAs, OrderID: orderID, Actor: actor, Reason: reason, At: at}
	if err := m.checkRedrive(); err != nil {
		return e, err
	}
	if err := CheckReason(reason, true); err != nil {
		return e, err
	}
	if redrivenAs == "" || orderID == "" {
		return e, &TransitionError{MessageID: m.ID, From: m.State, Event: e.EventType(), Detail: "re-drive without the new message and order"}
	}
	return e, nil
}

// Retry records a transient failure of attempt and when the next may start.
func (m *Message) Retry(attempt int, f Failure, notBefore time.Time, receipt json.RawMessage, at time.Time) (MessageRetried, error) {
	e := MessageRetried{Attempt: attempt, NextAttempt: attempt + 1, NotBefore: notBefore, Failure: f, Receipt: receipt, At: at}
	return e, m.check(e.EventType(), attempt)
}

// Apply folds one event, refusing any step the lifecycle forbids.
func (m *Message) Apply(ev Event) error {
	switch e := ev.(type) {
	case MessageAccepted:
		if err := m.check(e.EventType(), 0); err != nil {
			return err
		}
		m.ID, m.OrderID, m.AccountID, m.Index = e.MessageID, e.OrderID, e.AccountID, e.Index
		m.To, m.Country, m.From, m.Body = e.To, e.Country, e.From, e.Body
		m.Encoding, m.Segments, m.Price, m.ExpiresAt, m.SendAt = e.Encoding, e.Segments, e.Price, e.ExpiresAt, e.SendAt
		m.RedriveOf = e.RedriveOf
		m.State, m.AcceptedAt = StateAccepted, e.At
		if e.Scheduled() {
			m.State = StateScheduled
		}
	case MessageQueued:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		if e.Attempt != m.nextAttempt() {
			return &TransitionError{MessageID: m.ID, From: m.State, Event: e.EventType(), kind: ErrStaleAttempt,
				Detail: fmt.Sprintf("queued attempt %d, expected %d", e.Attempt, m.nextAttempt())}
		}
		m.State, m.Attempt, m.NextAttempt, m.NotBefore, m.QueuedAt = StateQueued, e.Attempt, 0, time.Time{}, e.At
		m.Routing, m.Provider, m.ProviderMessageID = nil, "", ""
	case MessageRouted:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		r := e.Route
		m.State, m.Routing, m.Provider, m.RoutedAt = StateRouted, &r, r.Provider, e.At
	case MessageSubmitted:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		m.State, m.ProviderMessageID, m.SubmittedAt = StateSubmitted, e.ProviderMessageID, e.At
	case MessageDelivered:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		m.State, m.DeliveredAt, m.Failure = StateDelivered, e.At, nil
	case MessageFailed:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		f := e.Failure
		m.State, m.Failure, m.FailedAt = StateFailed, &f, e.At
	case MessageCanceled:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		c := e
		m.State, m.Cancellation, m.CanceledAt = StateCanceled, &c, e.At
	case MessageRedriven:
		if err := m.checkRedrive(); err != nil {
			return err
		}
		r := e
		m.Redriven = &r
	case MessageRetried:
		if err := m.check(e.EventType(), e.Attempt); err != nil {
			return err
		}
		if e.NextAttempt != e.Attempt+1 {
			return &TransitionError{MessageID: m.ID, From: m.State, Event: e.EventType(),
				Detail: fmt.Sprintf("next attempt %d does not follow attempt %d", e.NextAttempt, e.Attempt)}
		}
		f := e.Failure
		m.State, m.NextAttempt, m.NotBefore, m.Failure, m.RetriedAt = StateRetried, e.NextAttempt, e.NotBefore, &f, e.At
		// A provider that failed this message is not asked again for it;
		// one that only asked us to slow down is.
		if f.Provider != "" && f.Code != CodeThrottled && !slices.Contains(m.Excluded, f.Provider) {
			m.Excluded = append(m.Excluded, f.Provider)
		}
	default:
		return fmt.Errorf("%w: %s is not a message event", ErrIllegalTransition, ev.EventType())
	}
	m.Version++
	return nil
}

// QueueAfter returns MessageQueued for a message whose latest event is of
// type last, without folding its history: a message whose stream ends with
// MessageAccepted is accepted or scheduled (attempt 1 is next), one that ends with
// MessageRetried waits for the attempt it names. The caller must append it
// with the stream version it saw that event at, so that nothing can have
// happened in between. Any other last event cannot be followed by a queue.
func QueueAfter(last string, nextAttempt int, jobID string, at time.Time) (MessageQueued, error) {
	m := Message{Attempt: nextAttempt - 1}
	switch last {
	case MessageAccepted{}.EventType():
		m.State = StateAccepted
	case MessageRetried{}.EventType():
		m.State, m.NextAttempt = StateRetried, nextAttempt
	default:
		m.State = StateQueued // stands for "not waiting to be queued"
	}
	return m.Queue(jobID, at)
}
