package sim

import (
	"testing"

	"github.com/nyaruka/phonenumbers"

	"github.com/afterok/afterok/domain/phone"
)

// TestExamples keeps the exported test numbers usable: each must select its
// outcome in the simulator's table, pass afterok's number validation, and be
// a mobile number (so it reads as a plausible SMS destination).
func TestExamples(t *testing.T) {
	tests := []struct {
		name, number string
		want         outcome
	}{
		{"delivered", ExampleDelivered, outcomeDelivered},
		{"undeliverable", ExampleUndeliverable, outcomeUndeliverable},
		{"rejected", ExampleRejected, outcomeInvalidDestination},
		{"failover", ExampleFailover, outcomeFailFirst},
		{"no receipt", ExampleNoReceipt, outcomeSilent},
		{"early receipt", ExampleEarlyReceipt, outcomeReceiptFirst},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := outcomeOf(submission{to: tt.number, body: "hi"}); got != tt.want {
				t.Errorf("outcome of %s = %d, want %d", tt.number, got, tt.want)
			}
			n, err := phone.Parse(tt.number)
			if err != nil {
				t.Fatalf("Parse(%s): %v", tt.number, err)
			}
			pn, err := phonenumbers.Parse(tt.number, "")
			if err != nil {
				t.Fatal(err)
			}
			if typ := phonenumbers.GetNumberType(pn); typ != phonenumbers.MOBILE {
				t.Errorf("%s (%s) is of type %v, not mobile", tt.number, n.Region, typ)
			}
		})
	}
}
