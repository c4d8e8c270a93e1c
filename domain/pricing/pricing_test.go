package pricing

import (
	"errors"
	"testing"

	"github.com/afterok/afterok/domain"
)

func mustParse(t *testing.T, s string) *Table {
	t.Helper()
	tab, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

func TestPrice(t *testing.T) {
	withDefault := mustParse(t, `{"currency":"EUR","default_micros":100000,"regions":{"DE":75000,"GB":42000}}`)
	noDefault := mustParse(t, `{"currency":"EUR","regions":{"DE":75000}}`)
	onlyDefault := mustParse(t, `{"currency":"USD","default_micros":9000}`)
	huge := mustParse(t, `{"currency":"EUR","regions":{"DE":4611686018427387904}}`) // 2^62

	tests := []struct {
		name     string
		table    *Table
		region   string
		segments int
		want     domain.Money
		wantErr  error
	}{
		{"listed region, one segment", withDefault, "DE", 1, domain.Money{AmountMicros: 75000, Currency: "EUR"}, nil},
		{"listed region, three segments", withDefault, "DE", 3, domain.Money{AmountMicros: 225000, Currency: "EUR"}, nil},
		{"listed region wins over default", withDefault, "GB", 2, domain.Money{AmountMicros: 84000, Currency: "EUR"}, nil},
		{"unlisted region takes default", withDefault, "FR", 2, domain.Money{AmountMicros: 200000, Currency: "EUR"}, nil},
		{"default only", onlyDefault, "US", 1, domain.Money{AmountMicros: 9000, Currency: "USD"}, nil},
		{"unlisted region without default", noDefault, "FR", 1, domain.Money{}, ErrNotPriced},
		{"region lookup is exact", noDefault, "de", 1, domain.Money{}, ErrNotPriced},
		{"empty region without default", noDefault, "", 1, domain.Money{}, ErrNotPriced},
		{"overflow is an error, not a wrap", huge, "DE", 2, domain.Money{}, domain.ErrAmountOverflow},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.table.Price(tt.region, tt.segments)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Price(%q, %d) error = %v, want %v", tt.region, tt.segments, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Price(%q, %d) = %v, want %v", tt.region, tt.segments, got, tt.want)
			}
		})
	}
}

func TestPriceRefusesNoSegments(t *testing.T) {
	tab := Default()
	for _, n := range []int{0, -1} {
		if m, err := tab.Price("DE", n); err == nil {
			t.Errorf("Price(DE, %d) = %v, want an error", n, m)
		}
	}
}

func TestNotPricedCode(t *testing.T) {
	_, err := mustParse(t, `{"currency":"EUR","regions":{"DE":75000}}`).Price("FR", 1)
	var coded interface{ Code() string }
	if !errors.As(err, &coded) || coded.Code() != "destination_not_priced" {
		t.Errorf("error %v carries no code destination_not_priced", err)
	}
}

func TestDefault(t *testing.T) {
	tab := Default()
	if tab.Currency() != "EUR" {
		t.Errorf("currency %q, want EUR", tab.Currency())
	}
	tests := []struct {
		region string
		want   int64
	}{
		{"DE", 75000}, {"FR", 65000}, {"GB", 42000}, {"NL", 85000}, {"US", 10000},
		{"JP", 100000}, // not listed: the default, so every destination is priced in dev
	}
	for _, tt := range tests {
		got, err := tab.Price(tt.region, 1)
		if err != nil || got.AmountMicros != tt.want {
			t.Errorf("Default().Price(%q, 1) = %v, %v; want %d micros", tt.region, got, err, tt.want)
		}
	}
}
