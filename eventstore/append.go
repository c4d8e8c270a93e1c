package eventstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// How an append stays correct under concurrency, without a global lock:
//
//   - A new stream (NoStream) is claimed by inserting its streams row; the
//     primary key lets exactly one racing writer have it. A loser's insert
//     finds the row (ON CONFLICT … RETURNING tells us which rows we did not
//     insert) and the loser gets a ConflictError: the conflict is reported,
//     never swallowed. Events are inserted only for streams we own.
//   - An existing stream (Exact, Any) is locked with SELECT … FOR UPDATE in
//     stream-id order (so two multi-stream appends cannot deadlock), its
//     version compared with the expectation, and its row updated in the same
//     transaction as the events insert.
//   - A conflicting append whose events are all already stored in that
//     stream is an idempotent retry (for example after a lost commit
//     acknowledgement) and succeeds without writing.
//   - Large batches of new streams go through COPY inside a savepoint; if
//     COPY hits a unique violation (a retry, a race) the savepoint is rolled
//     back and the batch takes the general path, which sorts it out.

const (
	insertEventsSQL = `-- name: append.insert_events
INSERT INTO events (stream_id, stream_version, event_id, type, schema_version,
    account_id, data, metadata, recorded_at, prev_hash, hash)
SELECT * FROM unnest($1::text[], $2::int[], $3::uuid[], $4::text[], $5::int[],
    $6::text[], $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::bytea[], $11::bytea[])`

	claimStreamsSQL = `-- name: append.claim_streams
INSERT INTO streams (stream_id, version, last_hash)
SELECT * FROM unnest($1::text[], $2::int[], $3::bytea[]) ORDER BY 1
ON CONFLICT (stream_id) DO NOTHING
RETURNING stream_id`

	lockStreamsSQL = `-- name: append.lock_streams
SELECT stream_id, version, last_hash FROM streams
WHERE stream_id = ANY($1::text[]) ORDER BY stream_id FOR UPDATE`

	updateStreamsSQL = `-- name: append.update_streams
UPDATE streams s SET version = u.version, last_hash = u.last_hash
FROM unnest($1::text[], $2::int[], $3::bytea[]) AS u(stream_id, version, last_hash)
WHERE s.stream_id = u.stream_id`

	storedEventsSQL = `-- name: append.stored_events
SELECT event_id, stream_id, stream_version FROM events WHERE event_id = ANY($1::uuid[])`
)

var eventColumns = []string{"stream_id", "stream_version", "event_id", "type", "schema_version",
	"account_id", "data", "metadata", "recorded_at", "prev_hash", "hash"}

type eventRow struct {
	stream   string
	version  int
	id       uuid.UUID
	typ      string
	schema   int
	account  string
	data     []byte
	meta     []byte
	recorded time.Time
	prev     []byte
	hash     []byte
}

func (r *eventRow) values() []any {
	return []any{r.stream, r.version, r.id, r.typ, r.schema, r.account, r.data, r.meta, r.recorded, r.prev, r.hash}
}

// prepared is one StreamAppend with its metadata encoded.
type prepared struct {
	StreamAppend
	meta [][]byte
	// filled in as the append proceeds
	base     int    // stream version before the append
	prevHash []byte // last hash before the append
	lastHash []byte // last hash after the append
	result   AppendResult
	skip     bool // already stored
}

// Append appends to one or more streams inside the transaction. It is all
// or nothing with the rest of the transaction.
func (tx *Tx) Append(ctx context.Context, batch ...StreamAppend) ([]AppendResult, error) {
	ps, total, err := prepare(batch)
	if err != nil {
		return nil, err
	}
	if tx.failed != nil {
		return nil, tx.failed
	}
	now := tx.store.now().UTC().Truncate(time.Microsecond)
	// The workers' batches (exact versions, one event a stream) take one
	// statement at any size: measured under afterok bench, their batches of
	// 200 went through the COPY path's three statements before.
	if exactSingles(ps) {
		res, wrote, err := tx.appendExact(ctx, ps, now)
		if err != nil {
			return nil, err
		}
		tx.appended = tx.appended || wrote
		return res, nil
	}
	if total >= tx.store.copyThreshold && countNew(ps) > 0 {
		res, err := tx.appendBulk(ctx, ps, now)
		if err == nil {
			tx.appended = true
			return res, nil
		}
		if !isUniqueViolation(err) && !errors.Is(err, errFallback) {
			return nil, err
		}
		for _, p := range ps {
			p.base, p.prevHash, p.skip = 0, nil, false
		}
	}
	res, wrote, err := tx.appendGeneral(ctx, ps, now)
	if err != nil {
		return nil, err
	}
	tx.appended = tx.appended || wrote
	return res, nil
}

func prepare(batch []StreamAppend) ([]*prepared, int, error) {
	if len(batch) == 0 {
		return nil, 0, fmt.Errorf("%w: nothing to append", ErrInvalidAppend)
	}
	seen := make(map[string]struct{}, len(batch))
	ps := make([]*prepared, len(batch))
	total := 0
	for i, a := range batch {
		if a.Stream == "" || len(a.Events) == 0 || a.Expected < Any {
			return nil, 0, fmt.Errorf("%w: stream %q with %d events, expected %s", ErrInvalidAppend, a.Stream, len(a.Events), a.Expected)
		}
		if _, dup := seen[a.Stream]; dup {
			return nil, 0, fmt.Errorf("%w: stream %q appears twice in one batch", ErrInvalidAppend, a.Stream)
		}
		seen[a.Stream] = struct{}{}
		p := &prepared{StreamAppend: a, meta: make([][]byte, len(a.Events))}
		p.Events = slices.Clone(a.Events)
		for j := range p.Events {
			e := &p.Events[j]
			if e.Type == "" || e.SchemaVersion < 1 || len(e.Data) == 0 {
				return nil, 0, fmt.Errorf("%w: event %d of %s needs a type, a schema version and data", ErrInvalidAppend, j, a.Stream)
			}
			if e.ID == uuid.Nil {
				id, err := uuid.NewV7()
				if err != nil {
					return nil, 0, err
				}
				e.ID = id
			}
			m, err := metadataJSON(e.Metadata)
			if err != nil {
				return nil, 0, err
			}
			p.meta[j] = m
		}
		total += len(a.Events)
		ps[i] = p
	}
	return ps, total, nil
}

func countNew(ps []*prepared) int {
	n := 0
	for _, p := range ps {
		if p.Expected == NoStream {
			n++
		}
	}
	return n
}

// rows builds the event rows of p on top of p.base/p.prevHash.
func (p *prepared) rows(now time.Time, h *hasher) ([]eventRow, error) {
	out := make([]eventRow, len(p.Events))
	prev := p.prevHash
	if p.base == 0 {
		prev = genesisHash
	}
	for j, e := range p.Events {
		r := eventRow{stream: p.Stream, version: p.base + j + 1, id: e.ID, typ: e.Type, schema: e.SchemaVersion,
			account: e.Metadata.AccountID, data: e.Data, meta: p.meta[j], recorded: now, prev: prev}
		sum, err := h.sum(prev, &r)
		if err != nil {
			return nil, err
		}
		r.hash = sum
		out[j] = r
		prev = sum
	}
	p.lastHash = prev
	p.result = AppendResult{Stream: p.Stream, FromVersion: p.base + 1, ToVersion: p.base + len(p.Events)}
	return out, nil
}

// lockExisting locks and reads the streams rows of the appends that expect
// an existing stream (or any), after claiming rows for Any-streams that do
// not exist yet. It returns the appends whose expectation failed.
func (tx *Tx) lockExisting(ctx context.Context, ps []*prepared) (conflicts []*prepared, err error) {
	var anyIDs, lockIDs []string
	for _, p := range ps {
		switch {
		case p.Expected == Any:
			anyIDs = append(anyIDs, p.Stream)
		case p.Expected > NoStream:
			lockIDs = append(lockIDs, p.Stream)
		}
	}
	if len(anyIDs) > 0 {
		// Claim a placeholder (version 0) for Any-streams that do not exist;
		// the lock below then treats every Any-stream alike.
		versions := make([]int32, len(anyIDs))
		hashes := make([][]byte, len(anyIDs))
		for i := range hashes {
			hashes[i] = genesisHash
		}
		if _, err := tx.Exec(ctx, claimStreamsSQL, anyIDs, versions, hashes); err != nil {
			return nil, fmt.Errorf("claim streams: %w", err)
		}
		lockIDs = append(lockIDs, anyIDs...)
	}
	if len(lockIDs) == 0 {
		return nil, nil
	}
	rows, err := tx.Query(ctx, lockStreamsSQL, lockIDs)
	if err != nil {
		return nil, fmt.Errorf("lock streams: %w", err)
	}
	type head struct {
		version int
		hash    []byte
	}
	heads := make(map[string]head, len(lockIDs))
	for rows.Next() {
		var id string
		var h head
		if err := rows.Scan(&id, &h.version, &h.hash); err != nil {
			rows.Close()
			return nil, err
		}
		heads[id] = h
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("lock streams: %w", err)
	}
	for _, p := range ps {
		if p.Expected == NoStream {
			continue
		}
		h, ok := heads[p.Stream]
		p.base, p.prevHash = h.version, h.hash
		if p.Expected > NoStream && (!ok || h.version != int(p.Expected)) {
			conflicts = append(conflicts, p)
		}
	}
	return conflicts, nil
}

// appendGeneral handles any mix of expectations with plain statements.
func (tx *Tx) appendGeneral(ctx context.Context, ps []*prepared, now time.Time) ([]AppendResult, bool, error) {
	h := newHasher()
	conflicts, err := tx.lockExisting(ctx, ps)
	if err != nil {
		return nil, false, err
	}
	// Claim new streams with their final version and hash.
	var news []*prepared
	var newRows [][]eventRow
	for _, p := range ps {
		if p.Expected != NoStream {
			continue
		}
		rs, err := p.rows(now, h)
		if err != nil {
			return nil, false, err
		}
		news, newRows = append(news, p), append(newRows, rs)
	}
	if len(news) > 0 {
		ids := make([]string, len(news))
		versions := make([]int32, len(news))
		hashes := make([][]byte, len(news))
		for i, p := range news {
			rs := newRows[i]
			ids[i], versions[i], hashes[i] = p.Stream, int32(len(rs)), rs[len(rs)-1].hash
		}
		rows, err := tx.Query(ctx, claimStreamsSQL, ids, versions, hashes)
		if err != nil {
			return nil, false, fmt.Errorf("claim streams: %w", err)
		}
		claimed := make(map[string]struct{}, len(ids))
		for rows.Next() {
			var id string
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, false, err
			}
			claimed[id] = struct{}{}
		}
		if err := rows.Err(); err != nil {
			return nil, false, fmt.Errorf("claim streams: %w", err)
		}
		for _, p := range news {
			if _, ok := claimed[p.Stream]; !ok {
				conflicts = append(conflicts, p)
			}
		}
	}
	// Conflicts may be idempotent retries; Any-appends may be retries too.
	check := slices.Clone(conflicts)
	for _, p := range ps {
		if p.Expected == Any && p.base > 0 {
			check = append(check, p)
		}
	}
	if err := tx.resolveRetries(ctx, check, conflicts); err != nil {
		return nil, false, err
	}
	// Build and write the rows of everything that is not already stored.
	var all []eventRow
	var upd []*prepared
	for i, p := range news {
		if !p.skip {
			all = append(all, newRows[i]...)
		}
	}
	for _, p := range ps {
		if p.Expected == NoStream || p.skip {
			continue
		}
		rs, err := p.rows(now, h)
		if err != nil {
			return nil, false, err
		}
		all = append(all, rs...)
		upd = append(upd, p)
	}
	if err := tx.write(ctx, all, upd); err != nil {
		return nil, false, err
	}
	return results(ps), len(all) > 0, nil
}

// resolveRetries decides, for each append in check, whether its events are
// already stored (an idempotent retry: skip it) or not. An append in
// conflicts that is not a complete retry is an error.
func (tx *Tx) resolveRetries(ctx context.Context, check, conflicts []*prepared) error {
	if len(check) == 0 {
		return nil
	}
	var ids []uuid.UUID
	for _, p := range check {
		for _, e := range p.Events {
			ids = append(ids, e.ID)
		}
	}
	type where struct {
		stream  string
		version int
	}
	stored := map[uuid.UUID]where{}
	rows, err := tx.Query(ctx, storedEventsSQL, ids)
	if err != nil {
		return fmt.Errorf("look up stored events: %w", err)
	}
	for rows.Next() {
		var id uuid.UUID
		var w where
		if err := rows.Scan(&id, &w.stream, &w.version); err != nil {
			rows.Close()
			return err
		}
		stored[id] = w
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("look up stored events: %w", err)
	}
	for _, p := range check {
		n := 0
		from, to := 0, 0
		for j, e := range p.Events {
			w, ok := stored[e.ID]
			if !ok {
				continue
			}
			n++
			if w.stream != p.Stream || (j > 0 && w.version != to+1) {
				return fmt.Errorf("%w: event %s of %s is stored as %s v%d", ErrDuplicateEventID, e.ID, p.Stream, w.stream, w.version)
			}
			if j == 0 {
				from = w.version
			}
			to = w.version
		}
		switch {
		case n == len(p.Events):
			p.skip = true
			p.result = AppendResult{Stream: p.Stream, FromVersion: from, ToVersion: to, AlreadyStored: true}
		case n > 0:
			return fmt.Errorf("%w: %d of %d events of the append to %s are already stored", ErrDuplicateEventID, n, len(p.Events), p.Stream)
		case slices.Contains(conflicts, p):
			actual := p.base
			if p.Expected == NoStream {
				actual = -1
			}
			return &ConflictError{Stream: p.Stream, Expected: p.Expected, Actual: actual}
		}
	}
	return nil
}

// appendBulk is the fast path for batches dominated by new streams: one
// COPY of all event rows (hashes computed while COPY streams) and one COPY
// of the new streams rows, inside a savepoint so that a unique violation
// can fall back to the general path.
func (tx *Tx) appendBulk(ctx context.Context, ps []*prepared, now time.Time) (res []AppendResult, err error) {
	sp, err := tx.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = sp.Rollback(context.WithoutCancel(ctx))
		}
	}()
	conflicts, err := tx.lockExisting(ctx, ps)
	if err != nil {
		return nil, err
	}
	if len(conflicts) > 0 {
		return nil, errFallback
	}
	for _, p := range ps {
		if p.Expected == Any && p.base > 0 {
			return nil, errFallback // may be a retry: let the general path check
		}
	}
	src := &rowSource{ps: ps, now: now, h: newHasher()}
	if _, err := sp.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, src); err != nil {
		if src.err != nil {
			return nil, src.err
		}
		return nil, fmt.Errorf("copy events: %w", err)
	}
	var streamRows [][]any
	var upd []*prepared
	for _, p := range ps {
		if p.Expected == NoStream {
			streamRows = append(streamRows, []any{p.Stream, p.result.ToVersion, p.lastHash})
		} else {
			upd = append(upd, p)
		}
	}
	if _, err := sp.CopyFrom(ctx, pgx.Identifier{"streams"}, []string{"stream_id", "version", "last_hash"}, pgx.CopyFromRows(streamRows)); err != nil {
		return nil, fmt.Errorf("copy streams: %w", err)
	}
	if err := updateStreams(ctx, sp, upd); err != nil {
		return nil, err
	}
	if err := sp.Commit(ctx); err != nil {
		return nil, err
	}
	return results(ps), nil
}

// errFallback sends a bulk append to the general path.
var errFallback = errors.New("bulk append falls back to the general path")

// rowSource feeds COPY lazily, hashing each event as it is sent, so the
// client's hashing overlaps the server's inserting.
type rowSource struct {
	ps   []*prepared
	now  time.Time
	h    *hasher
	i, j int
	cur  []eventRow
	row  []any
	err  error
}

func (s *rowSource) Next() bool {
	for s.j >= len(s.cur) {
		if s.i >= len(s.ps) {
			return false
		}
		p := s.ps[s.i]
		s.i++
		rs, err := p.rows(s.now, s.h)
		if err != nil {
			s.err = err
			return false
		}
		s.cur, s.j = rs, 0
	}
	s.row = s.cur[s.j].values()
	s.j++
	return true
}

func (s *rowSource) Values() ([]any, error) { return s.row, nil }
func (s *rowSource) Err() error             { return s.err }

// write inserts the event rows and moves the streams rows of appends to
// existing streams. Small writes go as one pipelined batch (one round
// trip for both statements); large ones through COPY.
func (tx *Tx) write(ctx context.Context, rows []eventRow, upd []*prepared) error {
	if len(rows) >= tx.store.copyThreshold {
		src := pgx.CopyFromSlice(len(rows), func(i int) ([]any, error) { return rows[i].values(), nil })
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"events"}, eventColumns, src); err != nil {
			return fmt.Errorf("copy events: %w", err)
		}
		return updateStreams(ctx, tx.Tx, upd)
	}
	b := &pgx.Batch{}
	if len(rows) > 0 {
		queueInsertEvents(b, rows)
	}
	if len(upd) > 0 {
		queueUpdateStreams(b, upd)
	}
	if b.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write events: %w", err)
	}
	return nil
}

func queueInsertEvents(b *pgx.Batch, rows []eventRow) {
	n := len(rows)
	streams, types, accounts := make([]string, n), make([]string, n), make([]string, n)
	versions, schemas := make([]int32, n), make([]int32, n)
	ids := make([]uuid.UUID, n)
	data, meta := make([]string, n), make([]string, n)
	prev, hashes := make([][]byte, n), make([][]byte, n)
	recorded := make([]time.Time, n)
	for i, r := range rows {
		streams[i], versions[i], ids[i], types[i], schemas[i] = r.stream, int32(r.version), r.id, r.typ, int32(r.schema)
		accounts[i], data[i], meta[i], recorded[i], prev[i], hashes[i] = r.account, string(r.data), string(r.meta), r.recorded, r.prev, r.hash
	}
	b.Queue(insertEventsSQL, streams, versions, ids, types, schemas, accounts, data, meta, recorded, prev, hashes)
}

func queueUpdateStreams(b *pgx.Batch, upd []*prepared) {
	ids := make([]string, len(upd))
	versions := make([]int32, len(upd))
	hashes := make([][]byte, len(upd))
	for i, p := range upd {
		ids[i], versions[i], hashes[i] = p.Stream, int32(p.result.ToVersion), p.lastHash
	}
	b.Queue(updateStreamsSQL, ids, versions, hashes)
}

func updateStreams(ctx context.Context, q pgx.Tx, upd []*prepared) error {
	if len(upd) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	queueUpdateStreams(b, upd)
	if err := q.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("update streams: %w", err)
	}
	return nil
}

func results(ps []*prepared) []AppendResult {
	out := make([]AppendResult, len(ps))
	for i, p := range ps {
		out[i] = p.result
	}
	return out
}

func isUniqueViolation(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505"
}
