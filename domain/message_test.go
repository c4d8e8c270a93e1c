package domain

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func accepted() MessageAccepted {
	return MessageAccepted{MessageID: "m1", OrderID: "o1", AccountID: "a1", To: "+4915112345678", Country: "DE",
		Body: "hi", Encoding: "gsm7", Segments: 1, Price: Money{AmountMicros: 75000, Currency: "EUR"},
		ExpiresAt: t0.Add(time.Hour), At: t0}
}

// scheduledAccepted is accepted() with a send_at a minute after acceptance.
func scheduledAccepted() MessageAccepted {
	e := accepted()
	e.SendAt, e.ExpiresAt = t0.Add(time.Minute), t0.Add(time.Minute+time.Hour)
	return e
}

var route = RouteDecision{RouteID: "r", Provider: "sim-a", Reason: "test"}

// histories bring a message into each state by a legal path.
var histories = map[MessageState][]Event{
	StateNew:       nil,
	StateScheduled: {scheduledAccepted()},
	StateAccepted:  {accepted()},
	StateQueued:    {accepted(), MessageQueued{Attempt: 1}},
	StateRouted:    {accepted(), MessageQueued{Attempt: 1}, MessageRouted{Attempt: 1, Route: route}},
	StateSubmitted: {accepted(), MessageQueued{Attempt: 1}, MessageRouted{Attempt: 1, Route: route}, MessageSubmitted{Attempt: 1, ProviderMessageID: "p1"}},
	StateRetried: {accepted(), MessageQueued{Attempt: 1}, MessageRouted{Attempt: 1, Route: route},
		MessageRetried{Attempt: 1, NextAttempt: 2, Failure: Failure{Code: CodeProviderUnavailable, Provider: "sim-a"}}},
	StateDelivered: {accepted(), MessageQueued{Attempt: 1}, MessageRouted{Attempt: 1, Route: route},
		MessageSubmitted{Attempt: 1, ProviderMessageID: "p1"}, MessageDelivered{Attempt: 1}},
	StateFailed:   {accepted(), MessageQueued{Attempt: 1}, MessageFailed{Attempt: 1, Failure: Failure{Code: CodeNoRoute}}},
	StateCanceled: {accepted(), MessageQueued{Attempt: 1}, MessageCanceled{Attempt: 1, Actor: "key-1"}},
}

// nextEvents returns, for a message in a state, each event type with
// attempt numbers that would be right if the step were allowed.
func nextEvents(s MessageState) map[string]Event {
	att, next := 1, 2
	if s == StateAccepted || s == StateScheduled || s == StateNew {
		att, next = 0, 1
	}
	queued := next
	if s != StateRetried && s != StateAccepted && s != StateScheduled && s != StateNew {
		queued = att + 1
	}
	return map[string]Event{
		"MessageAccepted":  accepted(),
		"MessageQueued":    MessageQueued{Attempt: queued},
		"MessageRouted":    MessageRouted{Attempt: att, Route: route},
		"MessageSubmitted": MessageSubmitted{Attempt: att, ProviderMessageID: "p"},
		"MessageDelivered": MessageDelivered{Attempt: att},
		"MessageFailed":    MessageFailed{Attempt: att, Failure: Failure{Code: CodeExpired}},
		"MessageRetried":   MessageRetried{Attempt: att, NextAttempt: att + 1},
		"MessageCanceled":  MessageCanceled{Attempt: att, Actor: "key-1", Reason: "test"},
		"MessageRedriven":  MessageRedriven{RedrivenAs: "m2", OrderID: "o2", Actor: "key-1", Reason: "test"},
	}
}

func TestMessageLifecycleEveryTransition(t *testing.T) {
	// The lifecycle written out by hand, independent of the table in
	// message.go: true = legal.
	legal := map[MessageState]map[string]bool{
		StateNew:       {"MessageAccepted": true},
		StateScheduled: {"MessageQueued": true, "MessageFailed": true, "MessageCanceled": true},
		StateAccepted:  {"MessageQueued": true, "MessageFailed": true, "MessageCanceled": true},
		StateQueued:    {"MessageRouted": true, "MessageFailed": true, "MessageRetried": true, "MessageCanceled": true},
		StateRouted:    {"MessageSubmitted": true, "MessageFailed": true, "MessageRetried": true},
		StateSubmitted: {"MessageDelivered": true, "MessageFailed": true, "MessageRetried": true},
		StateRetried:   {"MessageQueued": true, "MessageFailed": true, "MessageCanceled": true},
		StateDelivered: {},
		StateFailed:    {"MessageRedriven": true},
		StateCanceled:  {},
	}
	for state, hist := range histories {
		for typ, ev := range nextEvents(state) {
			t.Run(string(state)+"/"+typ, func(t *testing.T) {
				m, err := LoadMessage(hist)
				if err != nil {
					t.Fatalf("history: %v", err)
				}
				if m.State != state {
					t.Fatalf("history reached %q, want %q", m.State, state)
				}
				err = m.Apply(ev)
				if legal[state][typ] {
					if err != nil {
						t.Fatalf("legal step refused: %v", err)
					}
					if m.Version != len(hist)+1 {
						t.Fatalf("version %d after %d events", m.Version, len(hist)+1)
					}
					return
				}
				if !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("illegal step: got %v, want ErrIllegalTransition", err)
				}
				if state.Final() && !errors.Is(err, ErrFinalState) {
					t.Fatalf("step after final state: got %v, want ErrFinalState", err)
				}
				if m.Version != len(hist) || m.State != state {
					t.Fatalf("refused step changed the aggregate: version %d state %q", m.Version, m.State)
				}
			})
		}
	}
}

func TestMessageStaleAttemptRefused(t *testing.T) {
	m, _ := LoadMessage(histories[StateSubmitted])
	if _, err := m.Deliver(2, nil, t0, t0); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("receipt for a later attempt: %v", err)
	}
	m, _ = LoadMessage(append(histories[StateRetried][:len(histories[StateRetried]):len(histories[StateRetried])],
		MessageQueued{Attempt: 2}, MessageRouted{Attempt: 2, Route: route}, MessageSubmitted{Attempt: 2, ProviderMessageID: "p2"}))
	if _, err := m.Deliver(1, nil, t0, t0); !errors.Is(err, ErrStaleAttempt) {
		t.Fatalf("late receipt of attempt 1 applied to attempt 2: %v", err)
	}
	if err := m.Apply(MessageQueued{Attempt: 5}); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("queued from submitted: %v", err)
	}
}

func TestMessageCommandsFollowTheLifecycle(t *testing.T) {
	var m Message
	if err := m.Apply(accepted()); err != nil {
		t.Fatal(err)
	}
	step := func(e Event, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Apply(e); err != nil {
			t.Fatal(err)
		}
	}
	step(m.Queue("job-1", t0))
	step(m.Route(route, t0))
	step(m.Retry(m.Attempt, Failure{Code: CodeProviderUnavailable, Stage: StageSubmit, Provider: "sim-a"}, t0.Add(time.Second), nil, t0))
	if m.State.PublicState() != "queued" || m.DisplayAttempt() != 2 {
		t.Fatalf("retry shows %q attempt %d, want queued attempt 2", m.State.PublicState(), m.DisplayAttempt())
	}
	if len(m.Excluded) != 1 || m.Excluded[0] != "sim-a" {
		t.Fatalf("excluded = %v", m.Excluded)
	}
	step(m.Queue("job-2", t0))
	if m.Attempt != 2 {
		t.Fatalf("attempt %d after requeue", m.Attempt)
	}
	step(m.Route(RouteDecision{Provider: "sim-b"}, t0))
	step(m.Submit("prov-1", 30*time.Millisecond, t0))
	if m.Provider != "sim-b" || m.ProviderMessageID != "prov-1" {
		t.Fatalf("submitted via %q %q", m.Provider, m.ProviderMessageID)
	}
	e, err := m.Fail(2, Failure{Code: CodeUndeliverable, Stage: StageDelivery}, nil, t0)
	if err != nil || !e.Failure.Permanent {
		t.Fatalf("fail: %+v %v", e, err)
	}
	step(e, err)
	if _, err := m.Deliver(2, nil, t0, t0); !errors.Is(err, ErrFinalState) {
		t.Fatalf("delivered after failed: %v", err)
	}
	if _, err := m.Route(RouteDecision{}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("route after final: %v", err)
	}
}

func TestRouteNeedsProviderAndSubmitNeedsID(t *testing.T) {
	m, _ := LoadMessage(histories[StateQueued])
	if _, err := m.Route(RouteDecision{}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("route without provider: %v", err)
	}
	m, _ = LoadMessage(histories[StateRouted])
	if _, err := m.Submit("", 0, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("submit without provider id: %v", err)
	}
}

func TestThrottlingDoesNotExcludeAProvider(t *testing.T) {
	m, _ := LoadMessage(histories[StateRouted])
	e, err := m.Retry(1, Failure{Code: CodeThrottled, Provider: "sim-a"}, t0, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	_ = m.Apply(e)
	if len(m.Excluded) != 0 {
		t.Fatalf("throttled excluded %v", m.Excluded)
	}
}

func TestQueueAfterAgreesWithTheFold(t *testing.T) {
	for _, st := range []MessageState{StateAccepted, StateRetried} {
		m, _ := LoadMessage(histories[st])
		want, err := m.Queue("j", t0)
		if err != nil {
			t.Fatal(err)
		}
		last := histories[st][len(histories[st])-1].EventType()
		got, err := QueueAfter(last, want.Attempt, "j", t0)
		if err != nil || got != want {
			t.Fatalf("%s: got %+v %v, want %+v", st, got, err, want)
		}
	}
	for _, last := range []string{"MessageQueued", "MessageRouted", "MessageSubmitted", "MessageDelivered", "MessageFailed"} {
		if _, err := QueueAfter(last, 2, "j", t0); !errors.Is(err, ErrIllegalTransition) {
			t.Fatalf("queue after %s: %v", last, err)
		}
	}
}

func TestCancelFollowsTheLifecycle(t *testing.T) {
	// Cancelable is derived from the transition table; check it against the
	// states the contract names, by hand.
	want := map[MessageState]bool{StateScheduled: true, StateAccepted: true, StateQueued: true, StateRetried: true}
	for state, hist := range histories {
		if state == StateNew {
			continue
		}
		t.Run(string(state), func(t *testing.T) {
			m, err := LoadMessage(hist)
			if err != nil {
				t.Fatal(err)
			}
			if got := state.Cancelable(); got != want[state] {
				t.Fatalf("Cancelable() = %v, want %v", got, want[state])
			}
			e, err := m.Cancel("key-1", "client called it back", t0.Add(time.Second))
			if !want[state] {
				if !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("cancel from %s: %v, want ErrIllegalTransition", state, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("cancel from %s refused: %v", state, err)
			}
			if e.Actor != "key-1" || e.Reason != "client called it back" || e.Attempt != m.Attempt {
				t.Fatalf("event %+v", e)
			}
			if err := m.Apply(e); err != nil {
				t.Fatal(err)
			}
			if !m.State.Final() || m.State.PublicState() != "canceled" || m.Cancellation == nil || m.CanceledAt.IsZero() {
				t.Fatalf("after cancel: state %q public %q cancellation %+v", m.State, m.State.PublicState(), m.Cancellation)
			}
			if _, err := m.Cancel("key-1", "", t0); !errors.Is(err, ErrFinalState) {
				t.Fatalf("second cancel: %v, want ErrFinalState", err)
			}
		})
	}
}

func TestScheduledMessageWaitsThenQueues(t *testing.T) {
	m, err := LoadMessage(histories[StateScheduled])
	if err != nil {
		t.Fatal(err)
	}
	if m.State.PublicState() != "scheduled" || !m.SendAt.Equal(t0.Add(time.Minute)) {
		t.Fatalf("scheduled message shows %q, send_at %v", m.State.PublicState(), m.SendAt)
	}
	e, err := m.Queue("j", t0.Add(time.Minute))
	if err != nil || e.Attempt != 1 {
		t.Fatalf("queue a due scheduled message: %+v %v", e, err)
	}
	// A send_at not after acceptance is not a schedule: the message is
	// accepted and goes out at once.
	now := accepted()
	now.SendAt = now.At
	m, _ = LoadMessage([]Event{now})
	if m.State != StateAccepted {
		t.Fatalf("send_at = acceptance: state %q, want accepted", m.State)
	}
}
