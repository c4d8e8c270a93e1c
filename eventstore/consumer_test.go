package eventstore_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestConsumerAppliesEachEventOnceDespiteFailuresAndRivals runs two
// instances of one consumer against a stream of appends while the handler
// fails every seventh batch after writing (a crash before commit). Every
// event must land in the read table exactly once.
func TestConsumerAppliesEachEventOnceDespiteFailuresAndRivals(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, db := newStore(t)
	_, err := db.Pool.Exec(ctx, `CREATE TABLE applied (event_id uuid, consumer int)`)
	require.NoError(t, err)

	var calls atomic.Int64
	consumer := func(instance int) eventstore.Consumer {
		return eventstore.Consumer{
			Name: "test", BatchSize: 13, Poll: 20 * time.Millisecond,
			Filter: eventstore.Filter{Types: []string{"Wanted"}},
			Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
				for _, e := range batch {
					if e.Type != "Wanted" {
						return fmt.Errorf("filter let %s through", e.Type)
					}
					if _, err := tx.Exec(ctx, `INSERT INTO applied VALUES ($1, $2)`, e.ID, instance); err != nil {
						return err
					}
				}
				if calls.Add(1)%7 == 0 {
					return errors.New("injected crash after writing, before commit")
				}
				return nil
			},
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() { defer wg.Done(); _ = s.Run(runCtx, consumer(i)) }()
	}
	const total = 300
	for i := range total {
		_, err := s.Append(ctx, fmt.Sprintf("s-%d", i%17), eventstore.Any, ev("Wanted", i), ev("Noise", i))
		require.NoError(t, err)
	}
	// The newest event, read past the horizon (another database's open
	// transaction may be holding the tail back right now).
	var last eventstore.Cursor
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT xid, global_position FROM events
		ORDER BY xid DESC, global_position DESC LIMIT 1`).Scan(&last.XID, &last.Position))
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		var n int
		_ = db.Pool.QueryRow(ctx, `SELECT count(DISTINCT event_id) FROM applied`).Scan(&n)
		cp, _ := eventstore.Checkpoint(ctx, db.Pool, "test")
		// the checkpoint also moves past the filtered-out tail
		return n == total && cp == last, fmt.Sprintf("%d of %d events applied, checkpoint %v of %v", n, total, cp, last)
	})
	stop()
	wg.Wait()
	var rows, distinct int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*), count(DISTINCT event_id) FROM applied`).Scan(&rows, &distinct))
	require.Equal(t, total, distinct)
	require.Equal(t, total, rows, "an event was applied twice")
}
