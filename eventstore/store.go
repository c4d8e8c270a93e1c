package eventstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/domain"
)

// Store appends and reads events. It is safe for concurrent use.
type Store struct {
	pool          *pgxpool.Pool
	now           func() time.Time
	copyThreshold int
	// Consumers' defaults (WithPartitions, WithLease) and metrics.
	partitions      int
	lease           time.Duration
	consumerMetrics *ConsumerMetrics
	tailMax         int        // WithTailCache
	tail            *tailCache // nil: every tail consumer reads the database

	// changed is closed (and replaced) after every commit that appended, so
	// a tail reader that took it before querying never misses a wake-up.
	mu      sync.Mutex
	changed chan struct{}
}

// Option configures a Store.
type Option func(*Store)

// WithClock sets the clock that stamps recorded_at (tests pin it).
func WithClock(now func() time.Time) Option { return func(s *Store) { s.now = now } }

// WithCopyThreshold sets the number of events from which an append uses
// COPY instead of a single INSERT … SELECT FROM unnest(…).
func WithCopyThreshold(n int) Option { return func(s *Store) { s.copyThreshold = n } }

// WithPartitions sets how many partitions a consumer that names none runs
// as (default DefaultPartitions).
func WithPartitions(n int) Option { return func(s *Store) { s.partitions = n } }

// WithLease sets how long a consumer's partition lease lasts without
// renewal, for consumers that name none (default DefaultLease).
func WithLease(d time.Duration) Option { return func(s *Store) { s.lease = d } }

// WithConsumerMetrics counts the consumers' partitions and takeovers.
func WithConsumerMetrics(m *ConsumerMetrics) Option { return func(s *Store) { s.consumerMetrics = m } }

// New returns a Store over pool.
func New(pool *pgxpool.Pool, opts ...Option) *Store {
	s := &Store{pool: pool, now: time.Now, copyThreshold: 200, changed: make(chan struct{}), tailMax: DefaultTailCache}
	for _, o := range opts {
		o(s)
	}
	if s.tailMax > 0 {
		s.tail = newTailCache(s, s.tailMax)
	}
	return s
}

// Pool returns the pool the store runs on, for callers that keep their own
// tables in the same database (and transaction) as the events.
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Metadata travels with every event: who caused it, on whose behalf, as
// part of which order. AccountID is also stored in its own column so that
// tenant-scoped reads are an index range.
type Metadata struct {
	AccountID     string `json:"account_id,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"` // the order id
	CausationID   string `json:"causation_id,omitempty"`   // the event or request that caused it
	Actor         string `json:"actor,omitempty"`          // api key id, worker, provider
	TraceID       string `json:"trace_id,omitempty"`
}

// EventData is an event to append. A zero ID gets a fresh UUIDv7; callers
// that may retry an append should set the ID themselves so the retry is
// recognised as the same event.
type EventData struct {
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	Data          []byte
	Metadata      Metadata
}

// NewEvent encodes a domain event for appending, with a fresh id.
func NewEvent(e domain.Event, md Metadata) (EventData, error) {
	b, err := domain.Encode(e)
	if err != nil {
		return EventData{}, fmt.Errorf("encode %s: %w", e.EventType(), err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return EventData{}, err
	}
	return EventData{ID: id, Type: e.EventType(), SchemaVersion: e.SchemaVersion(), Data: b, Metadata: md}, nil
}

// MustEvent is NewEvent for events that cannot fail to encode (all of
// afterok's are plain structs); it panics on a programming error.
func MustEvent(e domain.Event, md Metadata) EventData {
	ev, err := NewEvent(e, md)
	if err != nil {
		panic(err)
	}
	return ev
}

// ExpectedVersion is the optimistic-concurrency condition of an append.
type ExpectedVersion int

const (
	// Any appends whatever the stream's version, creating it if needed.
	Any ExpectedVersion = -1
	// NoStream requires that the stream does not exist yet.
	NoStream ExpectedVersion = 0
)

// Exact requires the stream to be at version v (v ≥ 1).
func Exact(v int) ExpectedVersion { return ExpectedVersion(v) }

func (e ExpectedVersion) String() string {
	switch e {
	case Any:
		return "any"
	case NoStream:
		return "no stream"
	}
	return fmt.Sprintf("version %d", int(e))
}

// ErrWrongExpectedVersion is matched (errors.Is) by every append conflict.
var ErrWrongExpectedVersion = errors.New("wrong expected version")

// ErrDuplicateEventID is returned when an event id is reused for a
// different event (another stream, or a partial retry).
var ErrDuplicateEventID = errors.New("event id already used by a different append")

// ErrInvalidAppend is returned for malformed appends (no events, empty
// stream name, the same stream twice in one batch).
var ErrInvalidAppend = errors.New("invalid append")

// ConflictError describes an append whose expected version did not hold.
type ConflictError struct {
	Stream   string
	Expected ExpectedVersion
	Actual   int // -1 when unknown
}

func (e *ConflictError) Error() string {
	if e.Actual < 0 {
		return fmt.Sprintf("append to %s: expected %s: stream already exists", e.Stream, e.Expected)
	}
	return fmt.Sprintf("append to %s: expected %s, stream is at version %d", e.Stream, e.Expected, e.Actual)
}

// Is matches ErrWrongExpectedVersion.
func (e *ConflictError) Is(target error) bool { return target == ErrWrongExpectedVersion }

// StreamAppend is one stream's part of an atomic append.
type StreamAppend struct {
	Stream   string
	Expected ExpectedVersion
	Events   []EventData
}

// AppendResult reports the versions an append wrote. AlreadyStored is true
// when every event of the append was already in the stream (an idempotent
// retry): nothing was written.
type AppendResult struct {
	Stream        string
	FromVersion   int
	ToVersion     int
	AlreadyStored bool
}

// Tx is a database transaction that can append events. It embeds pgx.Tx so
// that callers can write their own tables (idempotency keys, checkpoints,
// read models) in the same commit as the events.
type Tx struct {
	pgx.Tx
	store    *Store
	appended bool
	// failed is set when an append failed after writing part of its
	// batch: the transaction must not commit (InTx and Savepoint refuse).
	failed error
}

// fail returns err, and when the failing append had already written part
// of its batch, marks the transaction so that it cannot commit: an append
// is all or nothing, and its rows cannot be deleted.
func (tx *Tx) fail(err error, wrote bool) error {
	if wrote && tx.failed == nil {
		tx.failed = err
	}
	return err
}

// InTx runs fn in a transaction and commits it if fn returns nil. Tail
// readers in this process are woken after a commit that appended events.
func (s *Store) InTx(ctx context.Context, fn func(tx *Tx) error) error {
	ptx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	tx := &Tx{Tx: ptx, store: s}
	defer func() { _ = ptx.Rollback(context.WithoutCancel(ctx)) }()
	if err := fn(tx); err != nil {
		return err
	}
	if tx.failed != nil {
		return fmt.Errorf("not committed: an append failed after writing part of its batch: %w", tx.failed)
	}
	if err := ptx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	if tx.appended {
		s.wake()
	}
	return nil
}

// Append appends events to one stream.
func (s *Store) Append(ctx context.Context, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error) {
	res, err := s.AppendMulti(ctx, []StreamAppend{{Stream: stream, Expected: expected, Events: events}})
	if err != nil {
		return AppendResult{}, err
	}
	return res[0], nil
}

// AppendMulti appends to several streams in one transaction: all or nothing.
func (s *Store) AppendMulti(ctx context.Context, batch []StreamAppend) ([]AppendResult, error) {
	var res []AppendResult
	err := s.InTx(ctx, func(tx *Tx) error {
		var err error
		res, err = tx.Append(ctx, batch...)
		return err
	})
	return res, err
}

// Changed returns a channel that is closed after the next commit in this
// process that appends events. Take it before reading the tail and wait on
// it (with a poll timeout, since other processes append too) when the read
// came back empty: no wake-up can fall between the read and the wait.
func (s *Store) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

func (s *Store) wake() {
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// metadataJSON encodes metadata for the metadata column.
func metadataJSON(md Metadata) ([]byte, error) { return json.Marshal(md) }

// Savepoint runs fn inside a savepoint of tx: if fn fails, only what fn
// did is rolled back and the transaction can go on (a failed statement
// otherwise aborts the whole transaction).
func (tx *Tx) Savepoint(ctx context.Context, fn func(tx *Tx) error) error {
	sp, err := tx.Tx.Begin(ctx)
	if err != nil {
		return err
	}
	inner := &Tx{Tx: sp, store: tx.store}
	if err := fn(inner); err != nil {
		_ = sp.Rollback(context.WithoutCancel(ctx))
		return err
	}
	if inner.failed != nil {
		_ = sp.Rollback(context.WithoutCancel(ctx))
		return inner.failed
	}
	if err := sp.Commit(ctx); err != nil {
		return err
	}
	tx.appended = tx.appended || inner.appended
	return nil
}
