package eventstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
)

// Consumer follows the global tail and applies each batch of events in one
// transaction together with its checkpoint, so a crash at any point either
// keeps both the effects and the new checkpoint, or neither: an event is
// never applied twice and never skipped. The scheduler, the order tracker
// and the projectors are consumers.
type Consumer struct {
	// Name identifies the checkpoint. Several processes may run the same
	// consumer: the checkpoint row is locked per batch and a batch whose
	// checkpoint moved underneath it is abandoned and re-read.
	Name      string
	Filter    Filter
	BatchSize int           // default 500
	Poll      time.Duration // how long to wait for other processes' appends; default 100 ms
	// Linger is how long a caught-up consumer waits after being woken by a
	// commit before it reads (default 10 ms): under load, commits arrive
	// by the thousand per second, and reading after each one would make a
	// transaction (and a tail query) per handful of events. Lingering turns
	// them into batches at the price of a few milliseconds of latency.
	Linger time.Duration
	// Handle applies a batch. It must do all of its writes through tx.
	Handle func(ctx context.Context, tx *Tx, batch []RecordedEvent) error
	Logger *slog.Logger
}

// ErrCheckpointMoved means another instance of the consumer advanced the
// checkpoint; the batch is re-read from the new checkpoint.
var ErrCheckpointMoved = errors.New("checkpoint moved")

// Checkpoint returns a consumer's checkpoint (the zero cursor if none).
func Checkpoint(ctx context.Context, q Querier, name string) (Cursor, error) {
	rows, err := q.Query(ctx, `SELECT xid, position FROM checkpoints WHERE name = $1`, name)
	if err != nil {
		return Cursor{}, err
	}
	c, err := pgx.CollectExactlyOneRow(rows, func(r pgx.CollectableRow) (Cursor, error) {
		var c Cursor
		return c, r.Scan(&c.XID, &c.Position)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		return Cursor{}, nil
	}
	return c, err
}

// SaveCheckpoint moves a checkpoint from "from" to "to" inside tx, failing
// with ErrCheckpointMoved if it is not at "from" any more.
func SaveCheckpoint(ctx context.Context, tx pgx.Tx, name string, from, to Cursor) error {
	var cur Cursor
	err := tx.QueryRow(ctx, `SELECT xid, position FROM checkpoints WHERE name = $1 FOR UPDATE`, name).Scan(&cur.XID, &cur.Position)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if from != (Cursor{}) {
			return ErrCheckpointMoved
		}
		tag, err := tx.Exec(ctx, `INSERT INTO checkpoints (name, xid, position) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`,
			name, to.XID, to.Position)
		if err != nil {
			return err
		}
		if tag.RowsAffected() != 1 {
			return ErrCheckpointMoved // a racing first batch of another instance
		}
		return nil
	case err != nil:
		return err
	case cur != from:
		return ErrCheckpointMoved
	}
	_, err = tx.Exec(ctx, `UPDATE checkpoints SET xid = $2, position = $3, updated_at = now() WHERE name = $1`, name, to.XID, to.Position)
	return err
}

// Run follows the tail until ctx ends. Errors from Handle are logged and
// the batch is retried after a pause; Run only returns when ctx is done.
func (s *Store) Run(ctx context.Context, c Consumer) error {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Poll <= 0 {
		c.Poll = 100 * time.Millisecond
	}
	log := c.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("consumer", c.Name)
	backoff := time.Duration(0)
	cursor, err := Checkpoint(ctx, s.pool, c.Name)
	for ctx.Err() == nil {
		if err != nil {
			if !errors.Is(err, ErrCheckpointMoved) {
				log.Error("consumer batch failed, retrying", "err", err, "backoff", backoff)
			}
			backoff = min(max(2*backoff, 50*time.Millisecond), 5*time.Second)
			Sleep(ctx, backoff)
			if cursor, err = Checkpoint(ctx, s.pool, c.Name); err != nil {
				continue
			}
		}
		var n int
		cursor, n, err = s.Step(ctx, c, cursor)
		if err != nil {
			continue
		}
		backoff = 0
		if n == 0 {
			// Step took the Changed channel before reading, so nothing is missed.
			continue
		}
	}
	return ctx.Err()
}

// Step reads one batch after cursor and applies it. It returns the new
// cursor and the number of events applied; when the tail is empty it waits
// for an append (or the poll interval) before returning 0.
func (s *Store) Step(ctx context.Context, c Consumer, cursor Cursor) (Cursor, int, error) {
	changed := s.Changed()
	batch, next, err := ReadAll(ctx, s.pool, cursor, c.BatchSize, c.Filter)
	if err != nil {
		return cursor, 0, err
	}
	if len(batch) == 0 {
		if next != cursor {
			// Only filtered-out events: move the checkpoint past them.
			if err := s.InTx(ctx, func(tx *Tx) error { return SaveCheckpoint(ctx, tx, c.Name, cursor, next) }); err != nil {
				return cursor, 0, err
			}
			return next, 0, nil
		}
		t := time.NewTimer(c.Poll)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-changed:
			linger := c.Linger
			if linger == 0 {
				linger = 10 * time.Millisecond
			}
			Sleep(ctx, linger)
		case <-t.C:
		}
		return cursor, 0, nil
	}
	err = s.InTx(ctx, func(tx *Tx) error {
		if err := c.Handle(ctx, tx, batch); err != nil {
			return err
		}
		return SaveCheckpoint(ctx, tx, c.Name, cursor, next)
	})
	if err != nil {
		return cursor, 0, fmt.Errorf("%s: %w", c.Name, err)
	}
	return next, len(batch), nil
}

// Sleep waits for d, or until ctx ends, whichever comes first: the pause
// between polls and retries of every loop that follows the store.
func Sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
