package domain

import (
	"errors"
	"testing"
	"time"
)

func TestOrderCompletesWithCanceledMessages(t *testing.T) {
	var o Order
	if err := o.Apply(OrderAccepted{OrderID: "o1", AccountID: "a1", MessageCount: 3, SendAt: t0.Add(time.Hour), At: t0}); err != nil {
		t.Fatal(err)
	}
	if !o.SendAt.Equal(t0.Add(time.Hour)) {
		t.Fatalf("send_at %v", o.SendAt)
	}
	if _, err := o.Complete(OrderCounts{Delivered: 1, Failed: 1}, Money{}, Money{}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("two of three final: %v", err)
	}
	e, err := o.Complete(OrderCounts{Delivered: 1, Failed: 1, Canceled: 1}, Money{}, Money{}, t0)
	if err != nil || e.Counts.Canceled != 1 {
		t.Fatalf("complete with a canceled message: %+v %v", e, err)
	}
	if _, err := o.Complete(OrderCounts{Canceled: -1, Delivered: 4}, Money{}, Money{}, t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("negative canceled count: %v", err)
	}
}
