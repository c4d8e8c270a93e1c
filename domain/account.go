package domain

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ErrInsufficientBalance is returned when a reservation does not fit.
var ErrInsufficientBalance = errors.New("insufficient balance")

// ErrInvalidAmount is returned for non-positive or mis-currencied amounts.
var ErrInvalidAmount = errors.New("invalid amount")

// ErrInconsistentBalance is returned by Apply when an event's recorded
// balances disagree with the fold: the history has been tampered with or a
// writer broke the money rules.
var ErrInconsistentBalance = errors.New("recorded balance disagrees with the history")

// InsufficientBalanceError carries what was asked and what was there.
type InsufficientBalanceError struct {
	Required  Money
	Available Money
}

func (e *InsufficientBalanceError) Error() string {
	return fmt.Sprintf("insufficient balance: %s required, %s available", e.Required, e.Available)
}

// Is matches ErrInsufficientBalance.
func (e *InsufficientBalanceError) Is(target error) bool { return target == ErrInsufficientBalance }

// Account is the account aggregate: who pays, in which currency, and how
// much it can still spend.
//
// Balance is what the account can spend now (credits − reservations −
// charges + refunds, where a charge only converts a reservation); Reserved
// is the part held for messages that are not final yet.
type Account struct {
	ID               string
	Name             string
	Currency         string
	AllowedCountries []string
	Balance          int64
	Reserved         int64
	Version          int
	OpenedAt         time.Time
}

// OpenAccount returns the event that opens a new account.
func OpenAccount(id, name, currency string, allowed []string, at time.Time) (AccountOpened, error) {
	if id == "" || name == "" || len(currency) != 3 {
		return AccountOpened{}, fmt.Errorf("%w: account needs an id, a name and a 3-letter currency", ErrInvalidAmount)
	}
	return AccountOpened{AccountID: id, Name: name, Currency: currency, AllowedCountries: allowed, At: at}, nil
}

// Allows reports whether the account may send to a region (ISO alpha-2).
func (a *Account) Allows(region string) bool {
	return len(a.AllowedCountries) == 0 || slices.Contains(a.AllowedCountries, region)
}

func (a *Account) amount(m Money) error {
	if m.AmountMicros <= 0 || m.Currency != a.Currency {
		return fmt.Errorf("%w: %s for an account in %s", ErrInvalidAmount, m, a.Currency)
	}
	return nil
}

// Credit adds spendable money.
func (a *Account) Credit(m Money, reference string, at time.Time) (AccountCredited, error) {
	if err := a.amount(m); err != nil {
		return AccountCredited{}, err
	}
	return AccountCredited{Amount: m, Reference: reference, At: at,
		Balances: Balances{BalanceAfter: a.Balance + m.AmountMicros, ReservedAfter: a.Reserved}}, nil
}

// MaxCreditMicros bounds one top-up (a billion units of the currency): a
// larger figure is a typo or an attack, never a payment, and the bound
// keeps every balance far from int64's end.
const MaxCreditMicros int64 = 1_000_000_000_000_000

// MaxReasonLength bounds the reason an operator gives for an action, in
// characters: it is shown in histories and consoles, not a document store.
const MaxReasonLength = 500

// ErrInvalidReason is returned for a reason that is missing where one is
// required, too long, or holds a control character (U+0000 included).
var ErrInvalidReason = errors.New("invalid reason")

// CheckReason checks an operator's reason; required says whether an empty
// one is refused.
func CheckReason(reason string, required bool) error {
	if strings.TrimSpace(reason) == "" {
		if required {
			return fmt.Errorf("%w: a reason is required", ErrInvalidReason)
		}
		return nil
	}
	if !utf8.ValidString(reason) {
		return fmt.Errorf("%w: the reason is not valid UTF-8", ErrInvalidReason)
	}
	if n := utf8.RuneCountInString(reason); n > MaxReasonLength {
		return fmt.Errorf("%w: the reason has %d characters, at most %d are kept", ErrInvalidReason, n, MaxReasonLength)
	}
	for _, r := range reason {
		if unicode.IsControl(r) && r != '\n' && r != '\t' {
			return fmt.Errorf("%w: the reason holds the control character %U", ErrInvalidReason, r)
		}
	}
	return nil
}

// TopUp credits an operator's payment after opening: a positive amount in
// the account's currency, at most MaxCreditMicros, with a reason.
func (a *Account) TopUp(m Money, reason string, at time.Time) (BalanceCredited, error) {
	if err := a.amount(m); err != nil {
		return BalanceCredited{}, err
	}
	if m.AmountMicros > MaxCreditMicros {
		return BalanceCredited{}, fmt.Errorf("%w: %d micros is above the %d a credit may add", ErrInvalidAmount, m.AmountMicros, MaxCreditMicros)
	}
	if a.Balance > math.MaxInt64/2-m.AmountMicros {
		return BalanceCredited{}, fmt.Errorf("%w: the balance would overflow", ErrInvalidAmount)
	}
	if err := CheckReason(reason, true); err != nil {
		return BalanceCredited{}, err
	}
	return BalanceCredited{Amount: m, Reason: reason, At: at,
		Balances: Balances{BalanceAfter: a.Balance + m.AmountMicros, ReservedAfter: a.Reserved}}, nil
}

// Reserve holds an order's price. The balance never goes below zero.
func (a *Account) Reserve(orderID string, m Money, messages int, at time.Time) (BalanceReserved, error) {
	if err := a.amount(m); err != nil {
		return BalanceReserved{}, err
	}
	if m.AmountMicros > a.Balance {
		return BalanceReserved{}, &InsufficientBalanceError{Required: m, Available: Money{AmountMicros: a.Balance, Currency: a.Currency}}
	}
	return BalanceReserved{OrderID: orderID, Amount: m, MessageCount: messages, At: at,
		Balances: Balances{BalanceAfter: a.Balance - m.AmountMicros, ReservedAfter: a.Reserved + m.AmountMicros}}, nil
}

// Charge converts the reservation of delivered messages into a charge.
func (a *Account) Charge(orderID string, m Money, messageIDs []string, at time.Time) (BalanceCharged, error) {
	if err := a.settle(m); err != nil {
		return BalanceCharged{}, err
	}
	return BalanceCharged{OrderID: orderID, Amount: m, MessageIDs: messageIDs, At: at,
		Balances: Balances{BalanceAfter: a.Balance, ReservedAfter: a.Reserved - m.AmountMicros}}, nil
}

// Release refunds the reservation of failed messages.
func (a *Account) Release(orderID string, m Money, messageIDs []string, reason string, at time.Time) (BalanceReleased, error) {
	if err := a.settle(m); err != nil {
		return BalanceReleased{}, err
	}
	return BalanceReleased{OrderID: orderID, Amount: m, MessageIDs: messageIDs, Reason: reason, At: at,
		Balances: Balances{BalanceAfter: a.Balance + m.AmountMicros, ReservedAfter: a.Reserved - m.AmountMicros}}, nil
}

func (a *Account) settle(m Money) error {
	if err := a.amount(m); err != nil {
		return err
	}
	if m.AmountMicros > a.Reserved {
		return fmt.Errorf("%w: settling %s with only %d reserved", ErrInvalidAmount, m, a.Reserved)
	}
	return nil
}

// Apply folds one account event and checks the balances it records.
func (a *Account) Apply(ev Event) error {
	var want Balances
	switch e := ev.(type) {
	case AccountOpened:
		if a.Version != 0 {
			return fmt.Errorf("account %s: %w: opened twice", a.ID, ErrIllegalTransition)
		}
		a.ID, a.Name, a.Currency, a.AllowedCountries, a.OpenedAt = e.AccountID, e.Name, e.Currency, e.AllowedCountries, e.At
		a.Version++
		return nil
	case APIKeyIssued, APIKeyRevoked:
		a.Version++
		return nil
	case AccountCredited:
		a.Balance += e.Amount.AmountMicros
		want = e.Balances
	case BalanceCredited:
		a.Balance += e.Amount.AmountMicros
		want = e.Balances
	case BalanceReserved:
		a.Balance -= e.Amount.AmountMicros
		a.Reserved += e.Amount.AmountMicros
		want = e.Balances
	case BalanceCharged:
		a.Reserved -= e.Amount.AmountMicros
		want = e.Balances
	case BalanceReleased:
		a.Reserved -= e.Amount.AmountMicros
		a.Balance += e.Amount.AmountMicros
		want = e.Balances
	default:
		return fmt.Errorf("%w: %s is not an account event", ErrIllegalTransition, ev.EventType())
	}
	a.Version++
	if want.BalanceAfter != a.Balance || want.ReservedAfter != a.Reserved {
		return fmt.Errorf("account %s at version %d: %w (recorded %d/%d, folded %d/%d)", a.ID, a.Version,
			ErrInconsistentBalance, want.BalanceAfter, want.ReservedAfter, a.Balance, a.Reserved)
	}
	if a.Balance < 0 || a.Reserved < 0 {
		return fmt.Errorf("account %s at version %d: %w (balance %d, reserved %d)", a.ID, a.Version,
			ErrInconsistentBalance, a.Balance, a.Reserved)
	}
	return nil
}

// RestoreAccount rebuilds the account's current position without folding
// its whole history: the opening event gives identity and policy, and the
// latest money event (if any) carries the balances. version is the stream's
// current version.
func RestoreAccount(opened AccountOpened, latest *Balances, version int) Account {
	a := Account{ID: opened.AccountID, Name: opened.Name, Currency: opened.Currency,
		AllowedCountries: opened.AllowedCountries, OpenedAt: opened.At, Version: version}
	if latest != nil {
		a.Balance, a.Reserved = latest.BalanceAfter, latest.ReservedAfter
	}
	return a
}

// MoneyBalances returns the balances a money event records, or false for
// events that do not move money.
func MoneyBalances(ev Event) (Balances, bool) {
	switch e := ev.(type) {
	case AccountCredited:
		return e.Balances, true
	case BalanceCredited:
		return e.Balances, true
	case BalanceReserved:
		return e.Balances, true
	case BalanceCharged:
		return e.Balances, true
	case BalanceReleased:
		return e.Balances, true
	}
	return Balances{}, false
}
