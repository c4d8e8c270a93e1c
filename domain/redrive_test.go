package domain

import (
	"errors"
	"testing"
)

// redriven is a failed message that was re-driven once.
func redriven() []Event {
	h := append([]Event{}, histories[StateFailed]...)
	return append(h, MessageRedriven{RedrivenAs: "m2", OrderID: "o2", Actor: "key-1", Reason: "provider fixed", At: t0})
}

func TestRedriveOnlyFromFailedAndOnlyOnce(t *testing.T) {
	cases := []struct {
		name    string
		history []Event
		want    error // nil: legal
		final   bool  // refused as a step after a final state
	}{
		{"failed", histories[StateFailed], nil, false},
		{"failed and re-driven already", redriven(), ErrAlreadyRedriven, false},
		{"delivered", histories[StateDelivered], ErrIllegalTransition, true},
		{"canceled", histories[StateCanceled], ErrIllegalTransition, true},
		{"queued", histories[StateQueued], ErrIllegalTransition, false},
		{"scheduled", histories[StateScheduled], ErrIllegalTransition, false},
		{"accepted", histories[StateAccepted], ErrIllegalTransition, false},
		{"routed", histories[StateRouted], ErrIllegalTransition, false},
		{"submitted", histories[StateSubmitted], ErrIllegalTransition, false},
		{"waiting for a retry", histories[StateRetried], ErrIllegalTransition, false},
		{"never accepted", nil, ErrIllegalTransition, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m, err := LoadMessage(c.history)
			if err != nil {
				t.Fatalf("history: %v", err)
			}
			before := m
			ev, err := m.Redrive("m2", "o2", "key-9", "provider fixed", t0)
			if m.Redrivable() != (c.want == nil) {
				t.Fatalf("Redrivable() = %v, Redrive err = %v", m.Redrivable(), err)
			}
			if c.want == nil {
				if err != nil {
					t.Fatalf("legal re-drive refused: %v", err)
				}
				if err := m.Apply(ev); err != nil {
					t.Fatalf("apply: %v", err)
				}
				if m.State != StateFailed || m.Redriven == nil || m.Redriven.RedrivenAs != "m2" || m.Redriven.OrderID != "o2" ||
					m.Redriven.Actor != "key-9" || m.Version != before.Version+1 {
					t.Fatalf("after re-drive: state %q redriven %+v version %d", m.State, m.Redriven, m.Version)
				}
				// And the second time it is refused as already re-driven.
				if _, err := m.Redrive("m3", "o3", "key-9", "again", t0); !errors.Is(err, ErrAlreadyRedriven) || !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("second re-drive: %v", err)
				}
				return
			}
			if !errors.Is(err, c.want) || !errors.Is(err, ErrIllegalTransition) {
				t.Fatalf("re-drive of a %s message: got %v, want %v", c.name, err, c.want)
			}
			if errors.Is(err, ErrAlreadyRedriven) != (c.want == ErrAlreadyRedriven) {
				t.Fatalf("already re-driven is said only of a re-driven message: %v", err)
			}
			if errors.Is(err, ErrFinalState) != c.final {
				t.Fatalf("final state: %v", err)
			}
			// Folding the event directly is refused the same way.
			if err := m.Apply(MessageRedriven{RedrivenAs: "m2", OrderID: "o2", Actor: "k", Reason: "r"}); !errors.Is(err, c.want) {
				t.Fatalf("apply: got %v, want %v", err, c.want)
			}
			if m.Version != before.Version || m.State != before.State {
				t.Fatalf("a refused re-drive changed the message")
			}
		})
	}
}

func TestRedrivenMessageTakesNoOtherEvent(t *testing.T) {
	for typ, ev := range nextEvents(StateFailed) {
		t.Run(typ, func(t *testing.T) {
			m, err := LoadMessage(redriven())
			if err != nil {
				t.Fatal(err)
			}
			err = m.Apply(ev)
			if !errors.Is(err, ErrIllegalTransition) {
				t.Fatalf("%s after MessageRedriven: %v", typ, err)
			}
		})
	}
}

func TestRedriveNeedsAReason(t *testing.T) {
	m, _ := LoadMessage(histories[StateFailed])
	for _, reason := range []string{"", "  ", "a\x00b"} {
		if _, err := m.Redrive("m2", "o2", "key-1", reason, t0); !errors.Is(err, ErrInvalidReason) {
			t.Fatalf("reason %q: %v", reason, err)
		}
	}
}

func TestRedriveOfTravelsWithTheCopy(t *testing.T) {
	e := accepted()
	e.RedriveOf = "m1-original"
	m, err := LoadMessage([]Event{e})
	if err != nil {
		t.Fatal(err)
	}
	if m.RedriveOf != "m1-original" || m.State != StateAccepted {
		t.Fatalf("copy: redrive_of %q state %q", m.RedriveOf, m.State)
	}
	data, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(e.EventType(), 1, data)
	if err != nil || back.(MessageAccepted).RedriveOf != "m1-original" {
		t.Fatalf("round trip: %v %+v", err, back)
	}
	r := MessageRedriven{RedrivenAs: "m2", OrderID: "o2", Actor: "k", Reason: "r", At: t0}
	data, _ = Encode(r)
	if back, err := Decode(r.EventType(), 1, data); err != nil || back != r {
		t.Fatalf("MessageRedriven round trip: %v %+v", err, back)
	}
}
