package domain

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestExpired(t *testing.T) {
	m, err := LoadMessage(histories[StateQueued])
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		at   time.Time
		want bool
	}{
		{m.ExpiresAt.Add(-time.Nanosecond), false},
		{m.ExpiresAt, true},
		{m.ExpiresAt.Add(time.Hour), true},
	} {
		if got := m.Expired(tt.at); got != tt.want {
			t.Errorf("Expired(%v after the validity) = %v, want %v", tt.at.Sub(m.ExpiresAt), got, tt.want)
		}
	}
}

// TestExpireInEveryState: whichever non-final state the validity ends in,
// the failure is the same permanent expired failure of the current
// attempt, and a final message cannot expire.
func TestExpireInEveryState(t *testing.T) {
	for state, history := range histories {
		t.Run("state="+string(state), func(t *testing.T) {
			m, err := LoadMessage(history)
			if err != nil {
				t.Fatal(err)
			}
			at := m.ExpiresAt.Add(time.Second)
			ev, err := m.Expire(at)
			if state.Final() || state == StateNew {
				if !errors.Is(err, ErrIllegalTransition) {
					t.Fatalf("Expire in %q: %v, want an illegal transition", state, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			f := ev.Failure
			if ev.Attempt != m.Attempt || f.Code != CodeExpired || f.Stage != StageExpiry || !f.Permanent || !ev.At.Equal(at) {
				t.Errorf("Expire = %+v", ev)
			}
			if !strings.Contains(f.Reason, m.ExpiresAt.Format(time.RFC3339)) || !strings.Contains(f.Reason, state.PublicState()) {
				t.Errorf("reason %q names neither the validity's end nor the state", f.Reason)
			}
			if err := m.Apply(ev); err != nil || m.State != StateFailed {
				t.Errorf("Apply(Expire) = %v, state %q", err, m.State)
			}
		})
	}
}
