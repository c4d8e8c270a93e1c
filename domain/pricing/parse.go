package pricing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/afterok/afterok/domain/phone"
)

// tableJSON is the file format of a price table:
//
//	{
//	  "currency": "EUR",             // ISO 4217, upper case
//	  "default_micros": 100000,      // optional: per segment, for regions not listed
//	  "regions": {"DE": 75000, …}    // per segment, by ISO 3166-1 alpha-2 region
//	}
//
// Amounts are integer micro-units per segment (75000 = 0.075 EUR).
type tableJSON struct {
	Currency      string       `json:"currency"`
	DefaultMicros *int64       `json:"default_micros,omitempty"`
	Regions       regionPrices `json:"regions"`
}

// regionPrices decodes the regions object itself, because encoding/json
// silently keeps the last of two equal keys, and a price table that lists
// "DE" twice is a mistake somebody must see, not a coin toss.
type regionPrices struct {
	prices     map[string]int64
	duplicates []string
}

func (r *regionPrices) UnmarshalJSON(data []byte) error {
	if string(data) == "null" {
		return nil // as encoding/json does: null leaves the value as it was
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("regions must be an object of region to price")
	}
	r.prices = map[string]int64{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // inside an object, the decoder only yields string keys here
		var price int64
		if err := dec.Decode(&price); err != nil {
			return fmt.Errorf("region %q: price must be an integer of micro-units: %w", key, err)
		}
		if _, dup := r.prices[key]; dup {
			r.duplicates = append(r.duplicates, key)
		}
		r.prices[key] = price
	}
	_, err := dec.Token() // the closing brace; the outer decoder checked the syntax
	return err
}

func (r regionPrices) MarshalJSON() ([]byte, error) {
	if r.prices == nil {
		return []byte("{}"), nil // an empty object reads as "no regions"; null reads as a hole
	}
	return json.Marshal(r.prices)
}

// Parse builds a Table from its JSON form (see tableJSON). It refuses, and
// lists every reason at once: unknown fields (a misspelt "default_micros"
// would silently mean "no default"), a currency that is not three upper-case
// letters, a price that is not a positive integer, a region that is not a
// region any number belongs to (e.g. "UK" for "GB", or lower case), a region
// listed twice, and a table that prices nothing.
func Parse(data []byte) (*Table, error) {
	var in tableJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return nil, fmt.Errorf("pricing: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("pricing: data after the table")
	}

	var problems []error
	if !isCurrency(in.Currency) {
		problems = append(problems, fmt.Errorf("currency %q is not an ISO 4217 code of three upper-case letters", in.Currency))
	}
	var defaultMicros int64
	if in.DefaultMicros != nil {
		defaultMicros = *in.DefaultMicros
		if defaultMicros <= 0 {
			problems = append(problems, fmt.Errorf("default_micros is %d; it must be positive, or left out for no default", defaultMicros))
		}
	}
	for _, region := range slices.Sorted(maps.Keys(in.Regions.prices)) {
		if price := in.Regions.prices[region]; price <= 0 {
			problems = append(problems, fmt.Errorf("region %q: price %d must be positive", region, price))
		}
		if !phone.IsRegion(region) {
			problems = append(problems, fmt.Errorf("region %q is not an ISO 3166-1 alpha-2 code any phone number belongs to", region))
		}
	}
	for _, region := range in.Regions.duplicates {
		problems = append(problems, fmt.Errorf("region %q is listed more than once", region))
	}
	if len(in.Regions.prices) == 0 && in.DefaultMicros == nil {
		problems = append(problems, errors.New("the table prices nothing: list regions, a default_micros, or both"))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("pricing: invalid table: %w", errors.Join(problems...))
	}
	return &Table{currency: in.Currency, defaultMicros: defaultMicros, perRegion: in.Regions.prices}, nil
}

// MarshalJSON writes the table in the form Parse reads, so a running
// service can show the prices it is using.
func (t *Table) MarshalJSON() ([]byte, error) {
	out := tableJSON{Currency: t.currency, Regions: regionPrices{prices: t.perRegion}}
	if t.defaultMicros != 0 {
		out.DefaultMicros = &t.defaultMicros
	}
	return json.Marshal(out)
}

func isCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := range 3 {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}
