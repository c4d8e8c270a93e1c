package phone

import "testing"

// TestSimulatorSuffixesInOtherRegions shows that the provider simulator's
// suffixes (its test numbers are German) are not a German peculiarity:
// these numbers, for tests that need another region (pricing, routing),
// pass Parse as well.
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
