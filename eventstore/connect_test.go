package eventstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestConcurrentStartsOnAnEmptyServer starts several processes' worth of
// Connect at once on a database that does not exist: every one creates it
// or finds it created, migrates or waits for the migrator, and succeeds.
// Two racing CREATE DATABASE statements fail with unique_violation on
// pg_database (not only duplicate_database), which used to stop one of
// them.
func TestConcurrentStartsOnAnEmptyServer(t *testing.T) {
	for round := range 3 { // the race is narrow; a few fresh databases make it show
		url, name := storetest.FreshDatabase(t)
		const starters = 6
		var wg sync.WaitGroup
		errs := make([]error, starters)
		start := make(chan struct{})
		for i := range starters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
				defer cancel()
				<-start
				pool, err := eventstore.Connect(ctx, url, eventstore.PoolConfig{MaxConns: 2})
				if err == nil {
					pool.Close()
				}
				errs[i] = err
			}()
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			require.NoError(t, err, "round %d, starter %d on %s", round, i, name)
		}
	}
	// And the schema is there once, whole.
	url, _ := storetest.FreshDatabase(t)
	pool, err := eventstore.Connect(context.Background(), url, eventstore.PoolConfig{MaxConns: 2})
	require.NoError(t, err)
	defer pool.Close()
	var applied, distinct int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*), count(DISTINCT version) FROM schema_migrations`).Scan(&applied, &distinct))
	require.Equal(t, applied, distinct)
	require.Positive(t, applied)
}
