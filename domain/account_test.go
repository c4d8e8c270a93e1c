package domain

import (
	"errors"
	"testing"
)

func eur(n int64) Money { return Money{AmountMicros: n, Currency: "EUR"} }

func openAccount(t *testing.T, credit int64) Account {
	t.Helper()
	var a Account
	opened, err := OpenAccount("a1", "Acme", "EUR", nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(opened); err != nil {
		t.Fatal(err)
	}
	c, err := a.Credit(eur(credit), "opening", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(c); err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAccountMoneyRules(t *testing.T) {
	a := openAccount(t, 1_000_000)
	r, err := a.Reserve("o1", eur(600_000), 8, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(r); err != nil {
		t.Fatal(err)
	}
	if a.Balance != 400_000 || a.Reserved != 600_000 {
		t.Fatalf("after reserve: balance %d reserved %d", a.Balance, a.Reserved)
	}
	_, err = a.Reserve("o2", eur(400_001), 1, t0)
	var ib *InsufficientBalanceError
	if !errors.Is(err, ErrInsufficientBalance) || !errors.As(err, &ib) || ib.Available.AmountMicros != 400_000 {
		t.Fatalf("over-reserve: %v", err)
	}
	c, err := a.Charge("o1", eur(450_000), []string{"m1"}, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(c); err != nil {
		t.Fatal(err)
	}
	rel, err := a.Release("o1", eur(150_000), []string{"m2"}, "failed", t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Apply(rel); err != nil {
		t.Fatal(err)
	}
	if a.Balance != 550_000 || a.Reserved != 0 {
		t.Fatalf("after settle: balance %d reserved %d", a.Balance, a.Reserved)
	}
	if _, err := a.Release("o1", eur(1), nil, "x", t0); !errors.Is(err, ErrInvalidAmount) {
		t.Fatalf("release beyond reserved: %v", err)
	}
	for _, bad := range []Money{eur(0), eur(-5), {AmountMicros: 5, Currency: "USD"}} {
		if _, err := a.Credit(bad, "", t0); !errors.Is(err, ErrInvalidAmount) {
			t.Fatalf("credit %v: %v", bad, err)
		}
		if _, err := a.Reserve("o", bad, 1, t0); !errors.Is(err, ErrInvalidAmount) {
			t.Fatalf("reserve %v: %v", bad, err)
		}
	}
}

func TestAccountApplyDetectsTamperedBalances(t *testing.T) {
	a := openAccount(t, 1000)
	r, _ := a.Reserve("o1", eur(100), 1, t0)
	r.BalanceAfter += 1
	if err := a.Apply(r); !errors.Is(err, ErrInconsistentBalance) {
		t.Fatalf("tampered balance_after: %v", err)
	}
}

func TestRestoreAccountMatchesFold(t *testing.T) {
	a := openAccount(t, 1000)
	r, _ := a.Reserve("o1", eur(300), 1, t0)
	_ = a.Apply(r)
	opened, _ := OpenAccount("a1", "Acme", "EUR", nil, t0)
	got := RestoreAccount(opened, &r.Balances, a.Version)
	if got.Balance != a.Balance || got.Reserved != a.Reserved || got.Version != a.Version || got.Currency != "EUR" {
		t.Fatalf("restored %+v, folded %+v", got, a)
	}
}

func TestOrderComplete(t *testing.T) {
	var o Order
	if err := o.Apply(OrderAccepted{OrderID: "o1", MessageCount: 3, Price: eur(300)}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Complete(OrderCounts{Delivered: 1, Failed: 1}, eur(100), eur(100), t0); !errors.Is(err, ErrIllegalTransition) {
		t.Fatalf("early completion: %v", err)
	}
	e, err := o.Complete(OrderCounts{Delivered: 2, Failed: 1, Expired: 1}, eur(200), eur(100), t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Apply(e); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Complete(OrderCounts{Delivered: 3}, eur(300), eur(0), t0); !errors.Is(err, ErrOrderCompleted) {
		t.Fatalf("second completion: %v", err)
	}
	if err := o.Apply(e); !errors.Is(err, ErrOrderCompleted) {
		t.Fatalf("second OrderCompleted applied: %v", err)
	}
}

func TestEncodeDecodeRoundTrip(t *testing.T) {
	events := []Event{accepted(), MessageQueued{Attempt: 1, At: t0}, MessageRouted{Attempt: 1, Route: route, At: t0},
		MessageRetried{Attempt: 1, NextAttempt: 2, Failure: Failure{Code: CodeTimeout}, At: t0},
		OrderAccepted{OrderID: "o", Price: eur(1)}, BalanceReleased{OrderID: "o", Amount: eur(1), MessageIDs: []string{"m"}}}
	for _, e := range events {
		b, err := Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Decode(e.EventType(), e.SchemaVersion(), b)
		if err != nil {
			t.Fatalf("%s: %v", e.EventType(), err)
		}
		b2, _ := Encode(got)
		if string(b) != string(b2) {
			t.Fatalf("%s round trip:\n%s\n%s", e.EventType(), b, b2)
		}
	}
	if _, err := Decode("NoSuchEvent", 1, []byte(`{}`)); !errors.Is(err, ErrUnknownEvent) {
		t.Fatalf("unknown type: %v", err)
	}
	if _, err := Decode("MessageQueued", 9, []byte(`{}`)); !errors.Is(err, ErrUnknownEvent) {
		t.Fatalf("unknown version: %v", err)
	}
}
