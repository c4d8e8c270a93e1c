package eventstore

import (
	"cmp"
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
//
// A consumer runs as Partitions partitions (see partition.go), each with
// its own checkpoint and owned by one process at a time: several processes
// running the same consumer share its partitions, and take over those of a
// process that dies. Within a process, one tail read serves every
// partition it owns, and their events are applied in one transaction that
// moves each of their checkpoints, fenced by each one's lease.
type Consumer struct {
	// Name identifies the consumer's checkpoints and leases.
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

	// Partitions is how many partitions the consumer's work is split into
	// (default: the store's, see WithPartitions). It is fixed for a
	// deployment: it bounds how many processes can share the consumer, and
	// changing it needs every process of the consumer stopped first.
	Partitions int
	// PartitionKey says which events belong together (default: the stream
	// id, which keeps each stream's events in order in one partition). A
	// consumer whose state spans streams returns what that state is per,
	// e.g. ByOrder, as long as each stream maps to one key.
	PartitionKey func(RecordedEvent) string
	// Lease is how long a partition stays with a process that stopped
	// renewing it (default: the store's, DefaultLease).
	Lease time.Duration
	// Committed, if set, is called after each batch that applied events
	// has committed, with those events (metrics that must count only what
	// is committed).
	Committed func(batch []RecordedEvent)

	owner  string // tests name a Run's claim (export_test.go)
	vanish bool   // tests: stop as a killed process would, leases kept
}

// ErrCheckpointMoved means another instance of the consumer advanced the
// checkpoint, or took over the partition; the batch is re-read from the
// checkpoint as committed.
var ErrCheckpointMoved = errors.New("checkpoint moved")

// checkpointSQL reads a consumer's checkpoint: the oldest of its
// partitions' (every event before it has been applied by every partition),
// or, for a consumer that has no partitions (the relay, or one that has
// not run since partitions came), its single row.
const checkpointSQL = `-- name: consumer.checkpoint
SELECT xid, position FROM (
  (SELECT 0 AS source, xid, position FROM consumer_partitions WHERE consumer = $1 ORDER BY xid, position LIMIT 1)
  UNION ALL
  (SELECT 1, xid, position FROM checkpoints WHERE name = $1)) AS c
ORDER BY source LIMIT 1`

// Checkpoint returns a consumer's checkpoint (the zero cursor if none):
// the oldest of its partitions' checkpoints.
func Checkpoint(ctx context.Context, q Querier, name string) (Cursor, error) {
	rows, err := q.Query(ctx, checkpointSQL, name)
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

// ForceCheckpoint sets a consumer's checkpoint to c, for every partition,
// whoever owns it (a rebuild that swaps in a read model computed up to c;
// a batch in flight then finds its checkpoint moved and rolls back).
func ForceCheckpoint(ctx context.Context, tx pgx.Tx, name string, c Cursor) error {
	if _, err := tx.Exec(ctx, `INSERT INTO checkpoints (name, xid, position) VALUES ($1, $2, $3)
ON CONFLICT (name) DO UPDATE SET xid = excluded.xid, position = excluded.position, updated_at = now()`,
		name, c.XID, c.Position); err != nil {
		return fmt.Errorf("force checkpoint of %s: %w", name, err)
	}
	if _, err := tx.Exec(ctx, `UPDATE consumer_partitions SET xid = $2::text::xid8, position = $3, updated_at = now()
WHERE consumer = $1`, name, xidText(c), c.Position); err != nil {
		return fmt.Errorf("force checkpoint of %s: %w", name, err)
	}
	return nil
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

// Run follows the tail until ctx ends, as one process of the consumer: it
// takes its share of the partitions and applies their events. Errors from
// Handle are logged and the batch is retried after a pause; Run only
// returns when ctx is done, after giving its partitions back.
func (s *Store) Run(ctx context.Context, c Consumer) error {
	c = s.consumerDefaults(c)
	log := c.Logger.With("consumer", c.Name)
	f := &follower{s: s, c: c, log: log, owner: cmp.Or(c.owner, ownerID()), lease: c.Lease, want: c.Partitions}
	return f.run(ctx)
}

func (s *Store) consumerDefaults(c Consumer) Consumer {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.Poll <= 0 {
		c.Poll = 100 * time.Millisecond
	}
	if c.Linger <= 0 {
		c.Linger = 10 * time.Millisecond
	}
	if c.Partitions <= 0 {
		c.Partitions = cmp.Or(s.partitions, DefaultPartitions)
	}
	if c.Lease <= 0 {
		c.Lease = cmp.Or(s.lease, DefaultLease)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Step reads one batch after cursor and applies it as every partition of
// the consumer at once, moving each from cursor to the batch's end, with
// no lease: it drives a consumer by hand (tests, tools) while no Run of it
// is live. It returns the new cursor and the number of events applied;
// when the tail is empty it waits for an append (or the poll interval)
// before returning 0. ErrCheckpointMoved: some partition was not at
// cursor.
func (s *Store) Step(ctx context.Context, c Consumer, cursor Cursor) (Cursor, int, error) {
	c = s.consumerDefaults(c)
	changed := s.Changed()
	batch, next, _, err := s.ReadTail(ctx, cursor, c.BatchSize, c.Filter)
	if err != nil {
		return cursor, 0, err
	}
	if len(batch) == 0 && next == cursor {
		t := time.NewTimer(c.Poll)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-changed:
			Sleep(ctx, c.Linger)
		case <-t.C:
		}
		return cursor, 0, nil
	}
	err = s.InTx(ctx, func(tx *Tx) error {
		if len(batch) > 0 {
			if err := c.Handle(ctx, tx, batch); err != nil {
				return err
			}
		}
		save := func() (partitions, moved int, err error) {
			err = tx.QueryRow(ctx, saveUnownedSQL, c.Name, xidText(next), next.Position, xidText(cursor), cursor.Position).
				Scan(&partitions, &moved)
			return partitions, moved, err
		}
		partitions, moved, err := save()
		if err == nil && partitions == 0 {
			// The consumer's first batch: its partitions start from its
			// single checkpoint, if it had one, like Run's.
			if _, err = tx.Exec(ctx, createPartitionsSQL, c.Name, c.Partitions); err == nil {
				partitions, moved, err = save()
			}
		}
		switch {
		case err != nil:
			return err
		case partitions == 0 || moved != partitions:
			return ErrCheckpointMoved
		}
		return nil
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
