package api_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/edge/api"
)

// TestNewRefusesANegativeLimit: a limit below zero is a mistake in the
// configuration, refused where the server is built, before any port
// opens; zero takes the default.
func TestNewRefusesANegativeLimit(t *testing.T) {
	for _, cfg := range []api.Config{{RateLimit: -1}, {RateBurst: -1}, {MaxBodyBytes: -1},
		{MaxStreamsPerAccount: -1}, {BodyBudgetBytes: -1}, {BodyMinRate: -1}, {BodyGrace: -time.Second}} {
		_, err := api.New(api.Deps{Logger: quiet}, cfg)
		require.Error(t, err, "%+v", cfg)
	}
	_, err := api.New(api.Deps{Logger: quiet}, api.Config{})
	require.NoError(t, err)
}
