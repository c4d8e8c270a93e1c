package scheduler_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/workers/scheduler"
)

// TestNewRefusesAnIncompleteConfig: a scheduler that lacks a part fails
// where it is built, before the process opens a port.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	for name, cfg := range map[string]scheduler.Config{
		"no store":     {},
		"no jetstream": {Store: eventstore.New(nil)},
	} {
		_, err := scheduler.New(cfg)
		require.Error(t, err, name)
	}
}
