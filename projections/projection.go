package projections

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
)

// Projection is one read-model builder: the tables it owns (written by it
// alone, rebuilt together), the event types it reads, and how it applies a
// batch of them inside the caller's transaction.
type Projection struct {
	Name   string
	Tables []string
	Types  []string
	// Sparse: Types are a small share of all events (see eventstore.Filter).
	Sparse bool
	// PartitionKey is the key the projection's partitions are split by
	// (see eventstore.Consumer): what its rows are per, where they gather
	// several streams' events.
	PartitionKey func(eventstore.RecordedEvent) string
	apply        func(ctx context.Context, tx pgx.Tx, batch []eventstore.RecordedEvent) (result, error)
}

// Checkpoint is the name of the projection's checkpoint row.
func (p Projection) Checkpoint() string { return "projection:" + p.Name }

// lockKey is the advisory lock that separates a live batch (shared) from a
// rebuild's swap (exclusive).
func (p Projection) lockKey() int64 {
	h := fnv.New64a()
	h.Write([]byte("afterok projection " + p.Name))
	return int64(h.Sum64())
}

// rebuildKey is the session lock that keeps two rebuilds of one projection
// from running at once.
func (p Projection) rebuildKey() int64 { return p.lockKey() ^ 0x5eed }

// result is what applying a batch did, for the runner's logs and metrics.
type result struct {
	// refused lists events the domain would not fold (an illegal step, an
	// unknown type). They are skipped, logged and counted; verify reports
	// the stream.
	refused []refusal
	// finished lists the messages the batch made final (outcomes.go).
	finished []finished
}

type refusal struct {
	stream  string
	version int
	err     error
}

func (r *result) refuse(e eventstore.RecordedEvent, err error) {
	r.refused = append(r.refused, refusal{stream: e.StreamID, version: e.Version, err: err})
}

func (r result) log(log *slog.Logger, projection string) {
	for _, f := range r.refused {
		log.Error("projection skipped an event it cannot fold", "projection", projection,
			"stream", f.stream, "version", f.version, "err", f.err)
	}
}

// All returns every projection, in the order status and verify list them.
func All() []Projection {
	return []Projection{messagesProjection(), accountsProjection()}
}

// Names lists the projections' names.
func Names() []string {
	var out []string
	for _, p := range All() {
		out = append(out, p.Name)
	}
	return out
}

// ErrUnknownProjection is returned for a name no projection has.
var ErrUnknownProjection = errors.New("unknown projection")

// Lookup returns the projection called name.
func Lookup(name string) (Projection, error) {
	all := All()
	i := slices.IndexFunc(all, func(p Projection) bool { return p.Name == name })
	if i < 0 {
		return Projection{}, fmt.Errorf("%w %q (known: %s)", ErrUnknownProjection, name, strings.Join(Names(), ", "))
	}
	return all[i], nil
}

// lockSharedSQL is taken by every live batch: a rebuild's swap takes the
// same key exclusively, waits for the batch in flight and holds the next.
const lockSharedSQL = `SELECT pg_advisory_xact_lock_shared($1)`

// Apply applies a batch inside tx the way the live runner does (including
// its lock against a concurrent swap). Tests and tools that drive a
// projection by hand use it; the runner calls it through its consumer.
func (p Projection) Apply(ctx context.Context, tx pgx.Tx, batch []eventstore.RecordedEvent) error {
	_, err := p.applyLocked(ctx, tx, batch)
	return err
}

func (p Projection) applyLocked(ctx context.Context, tx pgx.Tx, batch []eventstore.RecordedEvent) (result, error) {
	if _, err := tx.Exec(ctx, lockSharedSQL, p.lockKey()); err != nil {
		return result{}, fmt.Errorf("projection %s: lock: %w", p.Name, err)
	}
	return p.apply(ctx, tx, batch)
}
