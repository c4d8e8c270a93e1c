package domain

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestTopUpRules(t *testing.T) {
	cases := []struct {
		name   string
		amount Money
		reason string
		want   error
	}{
		{"a payment", eur(5_000_000), "invoice 2026-117 paid", nil},
		{"the largest credit", eur(MaxCreditMicros), "wire", nil},
		{"zero", eur(0), "wire", ErrInvalidAmount},
		{"negative", eur(-1), "wire", ErrInvalidAmount},
		{"above the bound", eur(MaxCreditMicros + 1), "wire", ErrInvalidAmount},
		{"int64's end", eur(math.MaxInt64), "wire", ErrInvalidAmount},
		{"another currency", Money{AmountMicros: 1, Currency: "USD"}, "wire", ErrInvalidAmount},
		{"no reason", eur(1), "", ErrInvalidReason},
		{"a blank reason", eur(1), " \t", ErrInvalidReason},
		{"a NUL in the reason", eur(1), "paid\x00", ErrInvalidReason},
		{"a reason that is not UTF-8", eur(1), "paid \xff", ErrInvalidReason},
		{"a reason too long", eur(1), strings.Repeat("é", MaxReasonLength+1), ErrInvalidReason},
		{"a reason of the longest length", eur(1), strings.Repeat("é", MaxReasonLength), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a := openAccount(t, 1_000_000)
			ev, err := a.TopUp(c.amount, c.reason, t0)
			if !errors.Is(err, c.want) {
				t.Fatalf("TopUp(%v, %q) = %v, want %v", c.amount, c.reason, err, c.want)
			}
			if err != nil {
				return
			}
			if err := a.Apply(ev); err != nil {
				t.Fatal(err)
			}
			if a.Balance != 1_000_000+c.amount.AmountMicros || ev.BalanceAfter != a.Balance || ev.Reason != c.reason {
				t.Fatalf("after the top-up: balance %d, event %+v", a.Balance, ev)
			}
		})
	}
}

func TestTopUpKeepsTheBalanceFarFromOverflow(t *testing.T) {
	a := openAccount(t, 1_000_000)
	for i := 0; ; i++ {
		ev, err := a.TopUp(eur(MaxCreditMicros), "wire", t0)
		if errors.Is(err, ErrInvalidAmount) {
			if a.Balance <= 0 || a.Balance > math.MaxInt64/2 {
				t.Fatalf("refused at balance %d", a.Balance)
			}
			return
		}
		if err != nil || i > 10_000 {
			t.Fatalf("top-up %d: %v", i, err)
		}
		if err := a.Apply(ev); err != nil {
			t.Fatal(err)
		}
	}
}

func TestKeyEventsAndTopUpsFold(t *testing.T) {
	a := openAccount(t, 1_000_000)
	v := a.Version
	for _, ev := range []Event{
		APIKeyIssued{KeyID: "key_1", Scopes: []string{"orders:write"}, At: t0},
		APIKeyRevoked{KeyID: "key_1", Reason: "leaked", At: t0},
	} {
		if err := a.Apply(ev); err != nil {
			t.Fatalf("%s: %v", ev.EventType(), err)
		}
	}
	if a.Version != v+2 || a.Balance != 1_000_000 {
		t.Fatalf("key events moved the account: version %d balance %d", a.Version, a.Balance)
	}
	// A top-up whose recorded balance disagrees with the fold is refused.
	bad := BalanceCredited{Amount: eur(10), Reason: "wire", Balances: Balances{BalanceAfter: 5, ReservedAfter: 0}, At: t0}
	if err := a.Apply(bad); !errors.Is(err, ErrInconsistentBalance) {
		t.Fatalf("inconsistent top-up: %v", err)
	}
	if b, ok := MoneyBalances(bad); !ok || b.BalanceAfter != 5 {
		t.Fatalf("MoneyBalances(BalanceCredited) = %v, %v", b, ok)
	}
}
