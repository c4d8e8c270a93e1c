package eventstore_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/schema"
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

// TestMigrationsRecordedTheOldWayAreAccepted takes a database whose
// schema_migrations holds whole-file checksums (as every database did
// before checksums left comments out, 0021 with its file as it was before
// a comment was edited): it starts, and its checksums are recorded anew. A
// recorded checksum that matches no form of the file is still refused.
func TestMigrationsRecordedTheOldWayAreAccepted(t *testing.T) {
	ctx := context.Background()
	url, _ := storetest.FreshDatabase(t)
	pool, err := eventstore.Connect(ctx, url, eventstore.PoolConfig{MaxConns: 2})
	require.NoError(t, err)
	defer pool.Close()
	migs, err := schema.Migrations()
	require.NoError(t, err)
	for _, m := range migs {
		old := m.Earlier[len(m.Earlier)-1] // 0021: its file before the edit; the others: their file
		_, err := pool.Exec(ctx, `UPDATE schema_migrations SET checksum = $2 WHERE version = $1`, m.Version, old)
		require.NoError(t, err)
	}
	require.NoError(t, eventstore.Migrate(ctx, pool))
	for _, m := range migs {
		var sum string
		require.NoError(t, pool.QueryRow(ctx, `SELECT checksum FROM schema_migrations WHERE version = $1`, m.Version).Scan(&sum))
		require.Equal(t, m.Checksum, sum, m.Name)
	}
	_, err = pool.Exec(ctx, `UPDATE schema_migrations SET checksum = repeat('0', 64) WHERE version = 21`)
	require.NoError(t, err)
	require.ErrorContains(t, eventstore.Migrate(ctx, pool), "was changed after it was applied")
}
