package projections_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/projections"
)

// TestNewRunnerRefusesAnIncompleteConfig: a runner without a store fails
// where it is built (it used to panic there, asking the store for its
// pool).
func TestNewRunnerRefusesAnIncompleteConfig(t *testing.T) {
	_, err := projections.NewRunner(projections.Config{})
	require.Error(t, err)
}
