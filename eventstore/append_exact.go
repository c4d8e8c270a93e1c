package eventstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The one-statement append: the hot path of the workers, where every
// stream of the batch expects an exact version and gets one event
// (MessageQueued, MessageRouted, MessageSubmitted, a receipt's outcome).
// The general path takes two round trips and three statements for it
// (lock the streams rows; insert the events; move the rows). Here one
// statement does all three:
//
//   - locked: the streams rows, locked in stream-id order as the general
//     path locks them (so the two paths, and two multi-stream appends,
//     cannot deadlock). FOR UPDATE in READ COMMITTED waits for a writer
//     holding the row and then returns the row as that writer left it.
//   - moved: those rows still at the expected version get the new version
//     and last_hash = sha256(old last_hash ‖ canonical event), which is
//     exactly eventHash (hash.go) computed by PostgreSQL; the client sends
//     the canonical bytes because it cannot know the old hash.
//   - the events are inserted only for the streams that moved, with the
//     old last hash as prev_hash and the new one as hash.
//
// A stream that did not move is a conflict or an idempotent retry, sorted
// out afterwards exactly as the general path does. Because the other
// streams of the batch were written by then, a real conflict marks the
// transaction failed (see Tx.fail): it can no longer commit.
const appendExactSQL = `-- name: append.exact
WITH u AS (
    SELECT * FROM unnest($1::text[], $2::int[], $3::uuid[], $4::text[], $5::int[],
        $6::text[], $7::jsonb[], $8::jsonb[], $9::timestamptz[], $10::bytea[])
        AS u(stream_id, stream_version, event_id, type, schema_version,
             account_id, data, metadata, recorded_at, canon)
),
locked AS (
    SELECT s.stream_id, s.version, s.last_hash FROM streams s
    WHERE s.stream_id = ANY($1::text[]) ORDER BY s.stream_id FOR UPDATE
),
moved AS (
    UPDATE streams s SET version = u.stream_version, last_hash = sha256(l.last_hash || u.canon)
    FROM locked l JOIN u ON u.stream_id = l.stream_id AND u.stream_version = l.version + 1
    WHERE s.stream_id = l.stream_id
    RETURNING s.stream_id, l.last_hash AS prev_hash, s.last_hash AS hash
)
INSERT INTO events (stream_id, stream_version, event_id, type, schema_version,
    account_id, data, metadata, recorded_at, prev_hash, hash)
SELECT u.stream_id, u.stream_version, u.event_id, u.type, u.schema_version,
    u.account_id, u.data, u.metadata, u.recorded_at, m.prev_hash, m.hash
FROM u JOIN moved m ON m.stream_id = u.stream_id
RETURNING stream_id`

// streamVersionsSQL reads the versions of streams that did not move.
const streamVersionsSQL = `-- name: append.stream_versions
SELECT stream_id, version FROM streams WHERE stream_id = ANY($1::text[])`

// exactSingles reports whether the batch fits the one-statement append.
func exactSingles(ps []*prepared) bool {
	for _, p := range ps {
		if p.Expected < Exact(1) || len(p.Events) != 1 {
			return false
		}
	}
	return true
}

// appendExact appends a batch of exact-version, one-event appends in one
// statement. It returns whether anything was written.
func (tx *Tx) appendExact(ctx context.Context, ps []*prepared, now time.Time) ([]AppendResult, bool, error) {
	// In stream-id order, so the rows come and go in the order they lock.
	sorted := slices.SortedFunc(slices.Values(ps), func(a, b *prepared) int { return strings.Compare(a.Stream, b.Stream) })
	n := len(ps)
	streams, types, accounts := make([]string, n), make([]string, n), make([]string, n)
	versions, schemas := make([]int32, n), make([]int32, n)
	ids := make([]uuid.UUID, n)
	data, meta := make([]string, n), make([]string, n)
	recorded := make([]time.Time, n)
	canons := make([][]byte, n)
	for i, p := range sorted {
		e := p.Events[0]
		v := int(p.Expected) + 1
		canon, err := appendCanonical(nil, chainInput{Stream: p.Stream, Version: v, ID: e.ID, Type: e.Type,
			SchemaVersion: e.SchemaVersion, RecordedAt: now, Data: e.Data, Metadata: p.meta[0]})
		if err != nil {
			return nil, false, err
		}
		streams[i], versions[i], ids[i], types[i], schemas[i] = p.Stream, int32(v), e.ID, e.Type, int32(e.SchemaVersion)
		accounts[i], data[i], meta[i], recorded[i], canons[i] = e.Metadata.AccountID, string(e.Data), string(p.meta[0]), now, canon
		p.base = int(p.Expected)
		p.result = AppendResult{Stream: p.Stream, FromVersion: v, ToVersion: v}
	}
	rows, err := tx.Query(ctx, appendExactSQL, streams, versions, ids, types, schemas, accounts, data, meta, recorded, canons)
	if err != nil {
		return nil, false, fmt.Errorf("append: %w", err)
	}
	moved := make(map[string]struct{}, n)
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, false, err
		}
		moved[id] = struct{}{}
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("append: %w", err)
	}
	if len(moved) == n {
		return results(ps), true, nil
	}
	var stuck []*prepared
	var stuckIDs []string
	for _, p := range sorted {
		if _, ok := moved[p.Stream]; !ok {
			stuck, stuckIDs = append(stuck, p), append(stuckIDs, p.Stream)
		}
	}
	if err := tx.stuckVersions(ctx, stuck, stuckIDs); err != nil {
		return nil, false, tx.fail(err, len(moved) > 0)
	}
	if err := tx.resolveRetries(ctx, stuck, stuck); err != nil {
		return nil, false, tx.fail(err, len(moved) > 0)
	}
	return results(ps), len(moved) > 0, nil
}

// stuckVersions records the actual version of streams that did not move,
// for the conflict error (-1 is reported as "does not exist": base 0).
func (tx *Tx) stuckVersions(ctx context.Context, stuck []*prepared, ids []string) error {
	rows, err := tx.Query(ctx, streamVersionsSQL, ids)
	if err != nil {
		return fmt.Errorf("append: %w", err)
	}
	actual := make(map[string]int, len(ids))
	for rows.Next() {
		var id string
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			rows.Close()
			return err
		}
		actual[id] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("append: %w", err)
	}
	for _, p := range stuck {
		p.base = actual[p.Stream]
	}
	return nil
}
