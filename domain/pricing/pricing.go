// Package pricing owns what a message costs: a price table maps the
// destination's region to a price per segment, in one currency. The API
// prices every message of an order with it before the order is accepted and
// the balance reserved, so a destination the table cannot price is refused
// up front, never discovered after sending.
//
// A Table is immutable once built, so it can be shared by every request
// without locks. Like all of domain/, this package does no I/O: the caller
// reads the JSON and hands it to Parse.
package pricing

import (
	"fmt"

	"github.com/afterok/afterok/domain"
)

// Table is a validated price list. Build it with Parse or Default.
type Table struct {
	currency string
	// defaultMicros prices regions that perRegion does not list; 0 means
	// there is no default and such regions are not priced.
	defaultMicros int64
	perRegion     map[string]int64
}

// CodeNotPriced is the stable code of ErrNotPriced, reported per message by
// the API.
const CodeNotPriced = "destination_not_priced"

// Error is the kind of error Price returns for a destination it refuses;
// Code gives the stable code the API reports.
type Error struct {
	code string
	text string
}

// Error returns the kind's message.
func (e *Error) Error() string { return e.text }

// Code returns the stable code of the kind, e.g. "destination_not_priced".
func (e *Error) Code() string { return e.code }

// ErrNotPriced is returned (wrapped, with the region) when the table has
// neither a price for the destination's region nor a default. Sending
// anyway would be sending for free.
var ErrNotPriced = &Error{code: CodeNotPriced, text: "destination not priced"}

// Currency returns the currency every price of the table is in.
func (t *Table) Currency() string { return t.currency }

// Price returns what a message of segments segments to region costs: the
// region's price per segment, or the default price if the region is not
// listed, times segments. It returns ErrNotPriced if neither exists, and
// domain.ErrAmountOverflow if the product leaves int64.
//
// segments must be at least 1: an empty body has 0 segments but is refused
// by validation, and pricing it at 0 would hide that bug.
func (t *Table) Price(region string, segments int) (domain.Money, error) {
	if segments < 1 {
		return domain.Money{}, fmt.Errorf("pricing: %d segments: a message has at least one", segments)
	}
	perSegment, ok := t.perRegion[region]
	if !ok {
		perSegment = t.defaultMicros
	}
	if perSegment == 0 {
		return domain.Money{}, fmt.Errorf("%w: region %q", ErrNotPriced, region)
	}
	return domain.Money{AmountMicros: perSegment, Currency: t.currency}.Mul(int64(segments))
}

// defaultTable is the price list `afterok dev` ships: EUR, per segment,
// in the range European A2P SMS cost in 2025, and a default so that every
// destination a developer tries is priced.
const defaultTable = `{
  "currency": "EUR",
  "default_micros": 100000,
  "regions": {
    "AT": 80000,
    "CA": 9000,
    "CH": 60000,
    "DE": 75000,
    "ES": 70000,
    "FR": 65000,
    "GB": 42000,
    "IT": 78000,
    "NL": 85000,
    "US": 10000
  }
}`

// Default returns the development price table (see defaultTable).
func Default() *Table {
	t, err := Parse([]byte(defaultTable))
	if err != nil {
		panic("pricing: the built-in default table is invalid: " + err.Error())
	}
	return t
}
