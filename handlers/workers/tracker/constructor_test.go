package tracker_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/workers/tracker"
)

// TestNewRefusesAnIncompleteConfig: a tracker without a store fails where
// it is built, before the process opens a port.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	_, err := tracker.New(tracker.Config{})
	require.Error(t, err)
	_, err = tracker.New(tracker.Config{Store: eventstore.New(nil), BatchSize: -1})
	require.Error(t, err)
}
