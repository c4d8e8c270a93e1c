package receipts_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

// TestNewRefusesAnIncompleteConfig: an intake without a store used to
// panic in New (it asks the store for its pool); now it says why.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	_, err := receipts.New(receipts.Config{})
	require.Error(t, err)
	_, err = receipts.New(receipts.Config{Store: eventstore.New(nil), MaxBodyBytes: -1})
	require.Error(t, err)
}
