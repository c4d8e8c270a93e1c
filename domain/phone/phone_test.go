package phone

import (
	"errors"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

func TestParse(t *testing.T) {
	tests := []struct {
		raw  string
		want Number
	}{
		{"+4915112345678", Number{"+4915112345678", "DE", 49}},
		{"+4930123456", Number{"+4930123456", "DE", 49}}, // Berlin fixed line: SMS may still reach it
		{"+33612345678", Number{"+33612345678", "FR", 33}},
		{"+447400123456", Number{"+447400123456", "GB", 44}},
		{"+447781123456", Number{"+447781123456", "GG", 44}}, // Guernsey shares +44
		{"+12025550123", Number{"+12025550123", "US", 1}},
		{"+16135550123", Number{"+16135550123", "CA", 1}}, // Ottawa shares +1
		{"+79123456789", Number{"+79123456789", "RU", 7}},
		{"+77012345678", Number{"+77012345678", "KZ", 7}},    // Kazakhstan shares +7
		{"+390612345678", Number{"+390612345678", "IT", 39}}, // Italian leading zero is part of the number
		{"+390669812345", Number{"+390669812345", "VA", 39}}, // Vatican inside +39 06
		{"+31612345678", Number{"+31612345678", "NL", 31}},
		{"+61491570006", Number{"+61491570006", "AU", 61}},
		{"+8613812345678", Number{"+8613812345678", "CN", 86}},
	}
	for _, tt := range tests {
		t.Run(tt.raw, func(t *testing.T) {
			got, err := Parse(tt.raw)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.raw, err)
			}
			if got != tt.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tt.raw, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, raw string
		want      *Error
	}{
		{"empty", "", ErrNotE164},
		{"no plus", "4915112345678", ErrNotE164},
		{"national form", "015112345678", ErrNotE164},
		{"international prefix instead of plus", "004915112345678", ErrNotE164},
		{"plus alone", "+", ErrNotE164},
		{"spaces", "+49 151 12345678", ErrNotE164},
		{"dashes", "+49-151-12345678", ErrNotE164},
		{"parentheses", "+1 (202) 555-0123", ErrNotE164},
		{"letters", "+4915112CALLME", ErrNotE164},
		{"leading space", " +4915112345678", ErrNotE164},
		{"trailing newline", "+4915112345678\n", ErrNotE164},
		{"full-width digits", "+４９１５１１２３４５６７８", ErrNotE164},
		{"country code starting with 0", "+04915112345678", ErrNotE164},
		{"16 digits", "+4915112345678901", ErrNotE164},
		{"country code only", "+49", ErrInvalidNumber},
		{"unknown country code", "+9991234567", ErrInvalidNumber},
		{"trunk prefix after country code", "+49015112345678", ErrInvalidNumber},
		{"too short for germany", "+491511234", ErrInvalidNumber},
		{"too long for france", "+336123456789", ErrInvalidNumber},
		{"unassigned us area code", "+11235550123", ErrInvalidNumber},
		{"gb drama range is not in the metadata", "+447700900123", ErrInvalidNumber},
		{"non-geographic freephone", "+80012345678", ErrInvalidNumber},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n, err := Parse(tt.raw)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Parse(%q) = %+v, %v; want %v", tt.raw, n, err, tt.want)
			}
			if n != (Number{}) {
				t.Errorf("Parse(%q) returned %+v with its error", tt.raw, n)
			}
			// The API finds the code without knowing this package's kinds.
			var coded interface{ Code() string }
			if !errors.As(err, &coded) || coded.Code() != tt.want.Code() {
				t.Errorf("code of %v is not %q", err, tt.want.Code())
			}
		})
	}
}

func TestErrorCodes(t *testing.T) {
	if ErrNotE164.Code() != "not_e164" || ErrInvalidNumber.Code() != "invalid_number" {
		t.Errorf("codes changed: %q, %q; they are part of the public API", ErrNotE164.Code(), ErrInvalidNumber.Code())
	}
	if errors.Is(ErrNotE164, ErrInvalidNumber) {
		t.Error("the two kinds must be distinguishable")
	}
}

// benchNumbers mixes the regions and shared country codes of a realistic
// international order.
var benchNumbers = []string{
	"+4915112345678", "+33612345678", "+447400123456", "+12025550123", "+16135550123",
	"+31612345678", "+390612345678", "+61491570006", "+8613812345678", "+4917612345678",
}

func BenchmarkParse(b *testing.B) {
	b.Run("afterok", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := Parse(benchNumbers[i%len(benchNumbers)]); err != nil {
				b.Fatal(err)
			}
		}
	})
	// The library's own way to the same answer, measured in the same run.
	b.Run("baseline-phonenumbers", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			n, err := phonenumbers.Parse(benchNumbers[i%len(benchNumbers)], "")
			if err != nil || !phonenumbers.IsValidNumber(n) {
				b.Fatal(err)
			}
			_ = phonenumbers.GetRegionCodeForNumber(n)
		}
	})
	b.Run("afterok-invalid", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if _, err := Parse("+4915112345"); err == nil {
				b.Fatal("accepted")
			}
		}
	})
}

// TestParseConcurrent exercises the lazily compiled rules from many
// goroutines at once, as API handlers do; it fails under -race if that
// sharing is unsafe.
func TestParseConcurrent(t *testing.T) {
	done := make(chan error)
	for g := range 8 {
		go func() {
			var err error
			for i := range 50 {
				if _, e := Parse(benchNumbers[(g+i)%len(benchNumbers)]); e != nil {
					err = e
				}
			}
			done <- err
		}()
	}
	for range 8 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func TestIsRegion(t *testing.T) {
	tests := []struct {
		code string
		want bool
	}{
		{"DE", true}, {"GB", true}, {"GG", true}, {"US", true}, {"VA", true},
		{"UK", false}, // the classic mistake: the United Kingdom is GB
		{"de", false}, {"DEU", false}, {"", false}, {"001", false}, {"ZZ", false},
	}
	for _, tt := range tests {
		if got := IsRegion(tt.code); got != tt.want {
			t.Errorf("IsRegion(%q) = %v, want %v", tt.code, got, tt.want)
		}
	}
}

// TestIsRegionCoversParse ties IsRegion to what Parse returns: every region
// of every example number is one IsRegion accepts.
func TestIsRegionCoversParse(t *testing.T) {
	for _, raw := range exampleNumbers() {
		if n, err := Parse(raw); err == nil && !IsRegion(n.Region) {
			t.Errorf("Parse(%s) gave region %q, which IsRegion refuses", raw, n.Region)
		}
	}
}
