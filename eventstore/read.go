package eventstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
)

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	Position      int64
	XID           uint64
	StreamID      string
	Version       int
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	AccountID     string
	Data          []byte
	Metadata      Metadata
	RecordedAt    time.Time
	PrevHash      []byte
	Hash          []byte
}

// Cursor returns the tail position just after this event.
func (e RecordedEvent) Cursor() Cursor { return Cursor{XID: e.XID, Position: e.Position} }

// Decode returns the domain event.
func (e RecordedEvent) Decode() (domain.Event, error) {
	return domain.Decode(e.Type, e.SchemaVersion, e.Data)
}

const recordedColumnsE = `e.global_position, e.xid, e.stream_id, e.stream_version, e.event_id, e.type, e.schema_version,
    e.account_id, e.data, e.metadata, e.recorded_at, e.prev_hash, e.hash`

const recordedColumns = `global_position, xid, stream_id, stream_version, event_id, type, schema_version,
    account_id, data, metadata, recorded_at, prev_hash, hash`

func scanRecorded(rows pgx.Rows) ([]RecordedEvent, error) {
	defer rows.Close()
	var out []RecordedEvent
	for rows.Next() {
		var e RecordedEvent
		var meta []byte
		if err := rows.Scan(&e.Position, &e.XID, &e.StreamID, &e.Version, &e.ID, &e.Type, &e.SchemaVersion,
			&e.AccountID, &e.Data, &meta, &e.RecordedAt, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		if err := jsonv2.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, fmt.Errorf("metadata of %s v%d: %w", e.StreamID, e.Version, err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// Querier is what reads need: a pool, a connection or a transaction.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

const readStreamSQL = `-- name: read.stream
SELECT ` + recordedColumns + ` FROM events
WHERE stream_id = $1 AND stream_version >= $2 ORDER BY stream_version`

// ReadStream returns a stream's events from version from (1 = all).
func (s *Store) ReadStream(ctx context.Context, stream string, from int) ([]RecordedEvent, error) {
	return ReadStream(ctx, s.pool, stream, from)
}

// ReadStream reads a stream through q (for reads inside a transaction).
func ReadStream(ctx context.Context, q Querier, stream string, from int) ([]RecordedEvent, error) {
	rows, err := q.Query(ctx, readStreamSQL, stream, from)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	evs, err := scanRecorded(rows)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	return evs, nil
}

const readStreamTypesSQL = `-- name: read.stream_types
SELECT ` + recordedColumns + ` FROM events
WHERE stream_id = $1 AND type = ANY($2::text[]) ORDER BY stream_version`

// ReadStreamTypes returns a stream's events of the given types, in
// version order: an account's own actions without its orders' money
// events, say.
func ReadStreamTypes(ctx context.Context, q Querier, stream string, types []string) ([]RecordedEvent, error) {
	rows, err := q.Query(ctx, readStreamTypesSQL, stream, types)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	evs, err := scanRecorded(rows)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", stream, err)
	}
	return evs, nil
}

// readStreamsSQL joins the ids as a relation rather than "= ANY($1)": the
// planner then expects as many rows as ids and probes the primary key per
// stream, instead of guessing a fraction of the table (a generic plan's
// guess) and scanning it once the table is large.
const readStreamsSQL = `-- name: read.streams
SELECT ` + recordedColumnsE + ` FROM unnest($1::text[]) AS s(id)
JOIN events e ON e.stream_id = s.id ORDER BY e.stream_id, e.stream_version`

// ReadStreams loads several whole streams in one query (workers load a
// batch of message aggregates at once).
func (s *Store) ReadStreams(ctx context.Context, streams []string) (map[string][]RecordedEvent, error) {
	return ReadStreams(ctx, s.pool, streams)
}

// ReadStreams is Store.ReadStreams through q.
func ReadStreams(ctx context.Context, q Querier, streams []string) (map[string][]RecordedEvent, error) {
	rows, err := q.Query(ctx, readStreamsSQL, streams)
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	evs, err := scanRecorded(rows)
	if err != nil {
		return nil, fmt.Errorf("read streams: %w", err)
	}
	out := make(map[string][]RecordedEvent, len(streams))
	for _, e := range evs {
		out[e.StreamID] = append(out[e.StreamID], e)
	}
	return out, nil
}

// Cursor is a position in the global tail: the (transaction id, global
// position) pair of the last event read. The zero Cursor is the start.
type Cursor struct {
	XID      uint64
	Position int64
}

// String renders the cursor as "xid.position".
func (c Cursor) String() string {
	return strconv.FormatUint(c.XID, 10) + "." + strconv.FormatInt(c.Position, 10)
}

// ParseCursor parses Cursor.String's form.
func ParseCursor(s string) (Cursor, error) {
	x, p, ok := strings.Cut(s, ".")
	xid, err1 := strconv.ParseUint(x, 10, 64)
	pos, err2 := strconv.ParseInt(p, 10, 64)
	if !ok || err1 != nil || err2 != nil || pos < 0 {
		return Cursor{}, fmt.Errorf("invalid cursor %q", s)
	}
	return Cursor{XID: xid, Position: pos}, nil
}

// Filter narrows a tail read. Zero fields match everything.
type Filter struct {
	AccountID string   // only this tenant's events (uses events_account_tail)
	Types     []string // only these event types
	// Sparse says the types are a small share of all events (final message
	// events, money events): they are then read through events_type_tail,
	// touching only their own rows. A broad type filter is better served by
	// walking the tail and dropping the few others here: sorting most of
	// the table's recent rows by type index would cost more.
	Sparse bool
	// OrderID keeps only the events whose metadata names that order as
	// their correlation (the order's own and its messages'). Only with an
	// AccountID: it is applied in the query, before the limit, while
	// walking that tenant's part of the tail.
	OrderID string
}

// The gap-safe tail.
//
// global_position comes from a sequence, and sequence values are handed out
// at insert time but become visible at commit time, in another order: a
// reader that remembers "the highest position I saw" skips every row whose
// transaction commits after a higher position became visible. Instead each
// row carries the id of the transaction that wrote it (xid8, 64-bit, never
// wraps), and a reader only reads rows whose transaction id is below the
// xmin of its snapshot: every transaction below xmin has finished, so no
// row can later appear there. Rows are ordered by (xid, global_position) —
// the xid8 column itself, not a text rendering — and the checkpoint is that
// pair. The price: one long-open writing transaction holds every reader
// back, which is why writers run with statement and idle-in-transaction
// timeouts (see Connect).
//
// The xmin of a snapshot is server-wide: transaction ids are shared by every
// database of a PostgreSQL server, so a long writing transaction in another
// database (another service, a bulk load, another test) would hold this
// store's tail back just as one of its own does. horizonCTE therefore takes
// the lowest in-progress transaction id that could belong to this database:
// an in-progress id that pg_stat_activity shows on a backend of another
// database can never write a row here (a backend belongs to one database
// for life), so it is passed over; every other one (this database's, a
// prepared transaction's, one whose backend has just finished) holds the
// horizon as before. With no such id the horizon is the snapshot's xmax:
// every id below it has finished. pg_stat_activity shows 32-bit xids, which
// are matched to the snapshot's xid8 values by their low 32 bits (the ids
// in progress span far less than 2^31). The lookup runs only when the
// snapshot lists transactions in progress.
//
// A page that comes back short has scanned everything up to the horizon,
// so the query also returns the newest row below xmin (in the same
// statement, hence the same snapshot) and the reader may jump its cursor
// there: a consumer that filters by type then does not rescan the same
// stretch of other events on every poll.
const horizonCTE = `s AS MATERIALIZED (SELECT pg_current_snapshot() AS s),
h AS MATERIALIZED (
  SELECT COALESCE(min(x), pg_snapshot_xmax((SELECT s FROM s))) AS xmin
  FROM pg_snapshot_xip((SELECT s FROM s)) AS x
  WHERE (x::text::numeric % 4294967296) NOT IN (
    SELECT backend_xid::text::numeric FROM pg_stat_activity
    WHERE datname <> current_database() AND backend_xid IS NOT NULL))`

const tailSQL = `-- name: tail.read
WITH ` + horizonCTE + `
(SELECT true, ` + recordedColumns + ` FROM events
  WHERE (xid, global_position) > ($1::xid8, $2::bigint)
    AND xid < (SELECT xmin FROM h)
    AND ($4::text[] IS NULL OR type = ANY($4::text[]))
  ORDER BY xid, global_position
  LIMIT $3)
UNION ALL
(SELECT false, ` + recordedColumns + ` FROM events
  WHERE xid < (SELECT xmin FROM h)
  ORDER BY xid DESC, global_position DESC
  LIMIT 1)`

const tailAccountSQL = `-- name: tail.read_account
WITH ` + horizonCTE + `
(SELECT true, ` + recordedColumns + ` FROM events
  WHERE account_id = $5 AND (xid, global_position) > ($1::xid8, $2::bigint)
    AND xid < (SELECT xmin FROM h)
    AND ($4::text[] IS NULL OR type = ANY($4::text[]))
    AND ($6::text = '' OR metadata->>'correlation_id' = $6::text)
  ORDER BY xid, global_position
  LIMIT $3)
UNION ALL
(SELECT false, ` + recordedColumns + ` FROM events
  WHERE account_id = $5 AND xid < (SELECT xmin FROM h)
  ORDER BY xid DESC, global_position DESC
  LIMIT 1)`

// ReadAll returns up to limit events after cursor in tail order, never an
// event that a still-open transaction could precede, and the cursor to
// continue from: the last event's, or — when the page came back short —
// the newest event below the horizon, which may lie beyond the last event
// that matched the filter.
//
// Reads without a tenant are answered from the store's shared window of
// the tail when it holds them (see tailCache): the events returned are
// shared with other readers and must not be changed.
func (s *Store) ReadAll(ctx context.Context, after Cursor, limit int, f Filter) ([]RecordedEvent, Cursor, error) {
	batch, next, _, err := s.ReadTail(ctx, after, limit, f)
	return batch, next, err
}

// ReadAll is Store.ReadAll through q.
func ReadAll(ctx context.Context, q Querier, after Cursor, limit int, f Filter) ([]RecordedEvent, Cursor, error) {
	var types []string
	var keep map[string]bool
	switch {
	// A tenant's read filters in the query, before the limit: dropping
	// rows here after LIMIT would hand a client pages of nothing (a page of
	// 100 events with one OrderAccepted among them, shown as one event).
	// Tail consumers without a tenant keep the cheaper walk below: they
	// continue from the last row scanned either way.
	case len(f.Types) > 0 && (f.Sparse || f.AccountID != ""):
		types = f.Types
	case len(f.Types) > 0:
		keep = make(map[string]bool, len(f.Types))
		for _, t := range f.Types {
			keep[t] = true
		}
	}
	var rows pgx.Rows
	var err error
	if f.AccountID != "" {
		rows, err = q.Query(ctx, tailAccountSQL, after.XID, after.Position, limit, types, f.AccountID, f.OrderID)
	} else {
		rows, err = q.Query(ctx, tailSQL, after.XID, after.Position, limit, types)
	}
	if err != nil {
		return nil, after, fmt.Errorf("read tail: %w", err)
	}
	defer rows.Close()
	var out []RecordedEvent
	var horizon *Cursor
	scanned, last := 0, after
	for rows.Next() {
		var inPage bool
		var e RecordedEvent
		var meta []byte
		if err := rows.Scan(&inPage, &e.Position, &e.XID, &e.StreamID, &e.Version, &e.ID, &e.Type, &e.SchemaVersion,
			&e.AccountID, &e.Data, &meta, &e.RecordedAt, &e.PrevHash, &e.Hash); err != nil {
			return nil, after, fmt.Errorf("read tail: %w", err)
		}
		if !inPage {
			c := e.Cursor()
			horizon = &c
			continue
		}
		scanned, last = scanned+1, e.Cursor()
		if keep != nil && !keep[e.Type] {
			continue
		}
		if err := jsonv2.Unmarshal(meta, &e.Metadata); err != nil {
			return nil, after, fmt.Errorf("metadata of %s v%d: %w", e.StreamID, e.Version, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, after, fmt.Errorf("read tail: %w", err)
	}
	// Continue after the last row read (kept or not); a short page has
	// read everything up to the horizon.
	next := last
	if scanned < limit && horizon != nil && next.Less(*horizon) {
		next = *horizon
	}
	return out, next, nil
}

// headSQL finds the newest event below the horizon (see tailSQL): every
// event after it in tail order is either committed later or still open,
// so a reader that starts there misses nothing that happens from now on.
const headSQL = `WITH ` + horizonCTE + `
SELECT xid, global_position FROM events
WHERE xid < (SELECT xmin FROM h)
ORDER BY xid DESC, global_position DESC LIMIT 1`

// Head returns the cursor of the tail's present: reading after it yields
// only events that become visible from now on. An empty store's head is
// the zero Cursor.
func (s *Store) Head(ctx context.Context) (Cursor, error) {
	var c Cursor
	err := s.pool.QueryRow(ctx, headSQL).Scan(&c.XID, &c.Position)
	if err == pgx.ErrNoRows {
		return Cursor{}, nil
	}
	if err != nil {
		return Cursor{}, fmt.Errorf("tail head: %w", err)
	}
	return c, nil
}

// CommittedAfter returns the positions of an account's events after a
// cursor that have committed by now (at most limit of them). The head
// lags the present by whatever writing transactions are open in this
// database; a reader that starts at the head and wants only what happens
// from now on skips these.
func (s *Store) CommittedAfter(ctx context.Context, after Cursor, accountID string, limit int) ([]int64, error) {
	rows, err := s.pool.Query(ctx, `SELECT global_position FROM events
WHERE account_id = $1 AND (xid, global_position) > ($2::xid8, $3::bigint) LIMIT $4`, accountID, after.XID, after.Position, limit)
	if err != nil {
		return nil, fmt.Errorf("committed after %s: %w", after, err)
	}
	positions, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		return nil, fmt.Errorf("committed after %s: %w", after, err)
	}
	return positions, nil
}

// Less orders cursors as the tail does.
func (c Cursor) Less(o Cursor) bool {
	return c.XID < o.XID || (c.XID == o.XID && c.Position < o.Position)
}

// CursorAt returns the cursor of the event at a global position, so that a
// client that only knows a position (an SSE Last-Event-ID) resumes exactly
// after it. ok is false when no such event exists for the account.
func (s *Store) CursorAt(ctx context.Context, position int64, accountID string) (c Cursor, ok bool, err error) {
	err = s.pool.QueryRow(ctx, `SELECT xid FROM events WHERE global_position = $1 AND ($2 = '' OR account_id = $2)`,
		position, accountID).Scan(&c.XID)
	if err == pgx.ErrNoRows {
		return Cursor{}, false, nil
	}
	if err != nil {
		return Cursor{}, false, err
	}
	c.Position = position
	return c, true, nil
}

// DecodeAll decodes stored events into domain events, in order.
func DecodeAll(recs []RecordedEvent) ([]domain.Event, error) {
	out := make([]domain.Event, len(recs))
	for i, r := range recs {
		e, err := r.Decode()
		if err != nil {
			return nil, fmt.Errorf("%s v%d: %w", r.StreamID, r.Version, err)
		}
		out[i] = e
	}
	return out, nil
}

// LoadMessage folds a message stream's stored events.
func LoadMessage(recs []RecordedEvent) (domain.Message, error) {
	evs, err := DecodeAll(recs)
	if err != nil {
		return domain.Message{}, err
	}
	return domain.LoadMessage(evs)
}

// FollowUp is the metadata of an event that continues a stream's history:
// the same tenant, order and trace, caused by the stream's latest event,
// written by actor.
func FollowUp(recs []RecordedEvent, actor string) Metadata {
	if len(recs) == 0 {
		return Metadata{Actor: actor}
	}
	last := recs[len(recs)-1]
	return Metadata{AccountID: last.AccountID, CorrelationID: last.Metadata.CorrelationID,
		CausationID: last.ID.String(), Actor: actor, TraceID: last.Metadata.TraceID}
}
