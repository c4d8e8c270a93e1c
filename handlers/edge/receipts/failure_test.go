package receipts

import (
	"testing"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/provider"
)

// TestFailedReceiptIsPermanent: the retry-or-fail decision
// (RetryPolicy.AfterFailure) goes by the failure's Permanent flag, so a
// failed receipt must carry a permanent failure, whatever its adapter put
// in it; a retry receipt keeps its failure as it is.
func TestFailedReceiptIsPermanent(t *testing.T) {
	transient := domain.Failure{Code: domain.CodeDeliveryDelayed, Stage: domain.StageDelivery, Provider: "sim-a"}
	for _, tt := range []struct {
		status  provider.ReceiptStatus
		failure *domain.Failure
		want    bool
	}{
		{provider.ReceiptFailed, &transient, true},
		{provider.ReceiptFailed, nil, true},
		{provider.ReceiptRetry, &transient, false},
		{provider.ReceiptRetry, nil, false},
	} {
		f := failureOf(provider.Receipt{Status: tt.status, Failure: tt.failure, Provider: "sim-a"})
		if f.Permanent != tt.want {
			t.Errorf("%s receipt (failure given: %v): permanent = %v, want %v", tt.status, tt.failure != nil, f.Permanent, tt.want)
		}
	}
	if transient.Permanent {
		t.Error("failureOf changed the receipt's own failure")
	}
}
