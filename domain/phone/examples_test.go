package phone

import (
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"
)

// TestExamples keeps the exported test numbers usable: each must pass
// Parse, be a mobile number (so it reads as a plausible SMS destination), and
// end in the suffix that selects its outcome in the provider simulator.
func TestExamples(t *testing.T) {
	tests := []struct {
		name, number, suffix string
	}{
		{"undeliverable", ExampleUndeliverable, "0001"},
		{"rejected", ExampleRejected, "0002"},
		{"failover", ExampleFailover, "0003"},
		{"no receipt", ExampleNoReceipt, "0004"},
		{"early receipt", ExampleEarlyReceipt, "0005"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.HasSuffix(tt.number, tt.suffix) {
				t.Errorf("%s does not end in %s", tt.number, tt.suffix)
			}
			checkMobile(t, tt.number)
		})
	}
	t.Run("delivered", func(t *testing.T) {
		if suffix := ExampleDelivered[len(ExampleDelivered)-4:]; suffix >= "0001" && suffix <= "0005" {
			t.Errorf("%s ends in %s, which the simulator does not deliver", ExampleDelivered, suffix)
		}
		checkMobile(t, ExampleDelivered)
	})
}

func checkMobile(t *testing.T, raw string) {
	t.Helper()
	n, err := Parse(raw)
	if err != nil {
		t.Fatalf("Parse(%s): %v", raw, err)
	}
	pn, err := phonenumbers.Parse(raw, "")
	if err != nil {
		t.Fatal(err)
	}
	if typ := phonenumbers.GetNumberType(pn); typ != phonenumbers.MOBILE {
		t.Errorf("%s (%s) is of type %v, not mobile", raw, n.Region, typ)
	}
}

// TestSimulatorSuffixesInOtherRegions shows that the simulator's suffixes
// are not a German peculiarity: these numbers, for tests that need another
// region (pricing, routing), pass Parse as well.
func TestSimulatorSuffixesInOtherRegions(t *testing.T) {
	tests := []struct {
		region string
		prefix string // all but the last four digits
	}{
		{"FR", "+3361234"},
		{"NL", "+3161234"},
		{"US", "+1202555"}, // fixed-line-or-mobile: NANP does not tell them apart
		{"CA", "+1613555"},
	}
	for _, tt := range tests {
		for _, suffix := range []string{"0001", "0002", "0003", "0004", "0005", "5678"} {
			n, err := Parse(tt.prefix + suffix)
			if err != nil || n.Region != tt.region {
				t.Errorf("Parse(%s) = %+v, %v; want region %s", tt.prefix+suffix, n, err, tt.region)
			}
		}
	}
}
