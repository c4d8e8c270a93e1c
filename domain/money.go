package domain

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Money is an amount in integer micro-units (1/1,000,000) of an ISO 4217
// currency. Integer micro-units keep sums exact: 0.075 EUR is 75000.
type Money struct {
	AmountMicros int64  `json:"amount_micros"`
	Currency     string `json:"currency"`
}

// ErrCurrencyMismatch is returned when amounts of different currencies meet.
var ErrCurrencyMismatch = errors.New("currency mismatch")

// ErrAmountOverflow is returned when a sum leaves the int64 range.
var ErrAmountOverflow = errors.New("amount overflow")

// Zero returns a zero amount in currency c.
func Zero(c string) Money { return Money{Currency: c} }

// Add returns m+o. Both must share a currency; a zero amount without currency
// adopts the other's currency.
func (m Money) Add(o Money) (Money, error) {
	c, err := sameCurrency(m, o)
	if err != nil {
		return Money{}, err
	}
	if (o.AmountMicros > 0 && m.AmountMicros > math.MaxInt64-o.AmountMicros) ||
		(o.AmountMicros < 0 && m.AmountMicros < math.MinInt64-o.AmountMicros) {
		return Money{}, ErrAmountOverflow
	}
	return Money{AmountMicros: m.AmountMicros + o.AmountMicros, Currency: c}, nil
}

// Sub returns m-o.
func (m Money) Sub(o Money) (Money, error) {
	return m.Add(Money{AmountMicros: -o.AmountMicros, Currency: o.Currency})
}

// Mul returns m*n, for a per-segment price times a segment count.
func (m Money) Mul(n int64) (Money, error) {
	if n != 0 && (m.AmountMicros > math.MaxInt64/n || m.AmountMicros < math.MinInt64/n) {
		return Money{}, ErrAmountOverflow
	}
	return Money{AmountMicros: m.AmountMicros * n, Currency: m.Currency}, nil
}

// String renders the amount for humans, e.g. "0.075000 EUR".
func (m Money) String() string {
	sign := ""
	a := m.AmountMicros
	if a < 0 {
		sign = "-"
		a = -a
	}
	return fmt.Sprintf("%s%d.%06d %s", sign, a/1_000_000, a%1_000_000, m.Currency)
}

func sameCurrency(a, b Money) (string, error) {
	switch {
	case a.Currency == b.Currency:
		return a.Currency, nil
	case a.Currency == "" && a.AmountMicros == 0:
		return b.Currency, nil
	case b.Currency == "" && b.AmountMicros == 0:
		return a.Currency, nil
	}
	return "", fmt.Errorf("%w: %s and %s", ErrCurrencyMismatch, a.Currency, b.Currency)
}

// ParseAmount parses a decimal amount in currency units ("12.5", "100",
// "0.075") into micro-units. More than six decimals is an error, not a
// rounding.
func ParseAmount(s, currency string) (Money, error) {
	if len(currency) != 3 {
		return Money{}, fmt.Errorf("%w: currency %q", ErrInvalidAmount, currency)
	}
	whole, frac, _ := strings.Cut(strings.TrimSpace(s), ".")
	if whole == "" || len(frac) > 6 || strings.HasPrefix(whole, "-") || strings.HasPrefix(whole, "+") {
		return Money{}, fmt.Errorf("%w: %q (want a non-negative decimal with at most 6 decimals)", ErrInvalidAmount, s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil || w > math.MaxInt64/1_000_000-1 {
		return Money{}, fmt.Errorf("%w: %q", ErrInvalidAmount, s)
	}
	var f int64
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 6-len(frac)), 10, 64); err != nil || f < 0 {
			return Money{}, fmt.Errorf("%w: %q", ErrInvalidAmount, s)
		}
	}
	return Money{AmountMicros: w*1_000_000 + f, Currency: currency}, nil
}
