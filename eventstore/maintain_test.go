package eventstore_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestMaintainAnalysesATableThatGrew: with autovacuum off, a table that
// grows far past what its last analysis saw is analysed again before its
// scheduled interval (here an hour), so that the planner does not keep
// planning for the empty table it once was.
func TestMaintainAnalysesATableThatGrew(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.NewDB(t)
	var autovacuum string
	require.NoError(t, db.Pool.QueryRow(ctx, `SHOW autovacuum`).Scan(&autovacuum))
	if autovacuum == "on" {
		t.Skip("autovacuum is on on this server: Maintain leaves the tables to it")
	}
	_, err := db.Pool.Exec(ctx, `CREATE TABLE grows (id bigint PRIMARY KEY, v text)`)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		done <- eventstore.Maintain(ctx, db.Pool, []eventstore.Table{{Name: "grows", Every: time.Hour, AnalyzeOnly: true}},
			slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	analyses := func() int64 {
		var n int64
		require.NoError(t, db.Pool.QueryRow(ctx, `SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'grows'`).Scan(&n))
		return n
	}
	storetest.Poll(t, 15*time.Second, func() (bool, string) { return analyses() == 1, "the first, scheduled analysis" })
	_, err = db.Pool.Exec(ctx, `INSERT INTO grows SELECT i, 'x' FROM generate_series(1, 20000) i`)
	require.NoError(t, err)
	storetest.Poll(t, 30*time.Second, func() (bool, string) { return analyses() >= 2, "an analysis after the table grew" })
	var rows float64
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE relname = 'grows'`).Scan(&rows))
	require.Equal(t, float64(20000), rows, "the planner knows the table's size")
	cancel()
	require.NoError(t, <-done)
}
