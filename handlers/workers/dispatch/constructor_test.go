package dispatch_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestNewRefusesAnIncompleteConfig: a worker that lacks a part fails where
// it is built, before the process opens a port, not when it first runs.
func TestNewRefusesAnIncompleteConfig(t *testing.T) {
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	for name, cfg := range map[string]dispatch.Config{
		"no store":          {Routes: routing.DefaultTable(), Breaker: breaker},
		"no jetstream":      {Store: eventstore.New(nil), Routes: routing.DefaultTable(), Breaker: breaker},
		"negative fetchers": {Store: eventstore.New(nil), Routes: routing.DefaultTable(), Breaker: breaker, Fetchers: -1},
	} {
		_, err := dispatch.New(cfg)
		require.Error(t, err, name)
	}
}
