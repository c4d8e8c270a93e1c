package receipts

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/provider"
)

// How a batch of receipts is settled, and why it cannot lose or double a
// receipt when workers, the expiry and other intakes write concurrently:
//
//  1. The receipts' message streams are loaded in one query, outside any
//     lock, and folded into aggregates.
//  2. In one transaction, the streams rows of those messages are locked
//     (FOR UPDATE, in stream-id order like every append, so no deadlock)
//     and their versions compared with the loaded ones. A stream that moved
//     (a worker appended MessageSubmitted, the expiry MessageFailed, another
//     intake MessageDelivered) is a conflict: the transaction is dropped and
//     the batch decided again from a fresh load, a bounded number of times.
//  3. Still under those locks, the messages' earlier receipts are read
//     from the receipts table. The lock is what makes part counting and
//     duplicate detection sound: two requests carrying the two parts of one
//     message, or the same receipt twice, are decided one after the other,
//     and the second sees the first's rows (each statement of a READ
//     COMMITTED transaction sees what committed before it started).
//  4. Parked receipts of these messages are decided again first, in arrival
//     order, then the batch's receipts in body order. The events go to the
//     store in one multi-stream append with the loaded versions as expected
//     versions, together with the receipts rows, in the same commit.
//
// Parking is covered by the same lock: a worker's MessageSubmitted append
// takes the stream's row lock too, so either the receipt is parked and
// committed before the submission (and the worker's ApplyParked finds it),
// or the submission comes first and step 2 sees the stream moved.
const (
	lockStreamsSQL = `SELECT stream_id, version FROM streams
WHERE stream_id = ANY($1::text[]) ORDER BY stream_id FOR UPDATE`

	historySQL = `SELECT id, provider, provider_message_id, message_id, attempt, part, parts, status,
    failure, done_at, raw, disposition
FROM receipts WHERE message_id = ANY($1::text[]) AND disposition IN ('applied', 'parked') ORDER BY id`

	insertReceiptsSQL = `INSERT INTO receipts (provider, provider_message_id, message_id, attempt, part, parts,
    status, failure, done_at, raw, received_at, disposition, reason, resolved_at, event_id, checked_version)
SELECT u.provider, u.provider_message_id, u.message_id, u.attempt, u.part, u.parts,
    u.status, NULLIF(u.failure, '')::jsonb, u.done_at, u.raw::jsonb, $14::timestamptz, u.disposition,
    NULLIF(u.reason, ''), CASE WHEN u.disposition = 'parked' THEN NULL ELSE $14::timestamptz END,
    NULLIF(u.event_id, '')::uuid, u.checked_version
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::int[], $6::int[],
    $7::text[], $8::text[], $9::timestamptz[], $10::text[], $11::text[], $12::text[], $13::text[], $15::int[])
    AS u(provider, provider_message_id, message_id, attempt, part, parts,
         status, failure, done_at, raw, disposition, reason, event_id, checked_version)`

	updateParkedSQL = `UPDATE receipts r SET disposition = u.disposition, reason = NULLIF(u.reason, ''),
    resolved_at = CASE WHEN u.disposition = 'parked' THEN NULL ELSE $6::timestamptz END,
    event_id = NULLIF(u.event_id, '')::uuid, checked_version = u.checked_version
FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[])
    AS u(id, disposition, reason, event_id, checked_version)
WHERE r.id = u.id AND r.disposition = 'parked'`

	// linkPartsSQL points the parts counted towards an attempt at the event
	// that settled it, so support can go from MessageDelivered to every part.
	linkPartsSQL = `UPDATE receipts r SET event_id = u.event_id::uuid
FROM unnest($1::text[], $2::int[], $3::text[]) AS u(message_id, attempt, event_id)
WHERE r.message_id = u.message_id AND r.attempt = u.attempt
    AND r.disposition = 'applied' AND r.event_id IS NULL`
)

// settlement is the outcome of one committed batch.
type settlement struct {
	incoming []*entry
	// unparked are the parked receipts that were decided again, whether
	// they moved or stayed parked.
	unparked []*entry
	books    map[string]*book
}

// settle decides incoming (this request's receipts, possibly none) and the
// parked receipts of messageIDs, and commits the outcome, reloading and
// deciding again after a conflict up to cfg.ConflictRetries times.
//
// refused are the receipts of the same callback that could not be used;
// they are recorded in the same commit.
func (in *Intake) settle(ctx context.Context, incoming []provider.Receipt, refused []*provider.ReceiptError, messageIDs []string, trace string) (*settlement, error) {
	for try := 1; ; try++ {
		s, err := in.settleOnce(ctx, incoming, refused, messageIDs, trace, try)
		if err == nil {
			return s, nil
		}
		if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			return nil, err
		}
		in.metrics.conflicts.Inc()
		if try >= in.cfg.ConflictRetries {
			return nil, &ContendedError{Tries: try, Err: err}
		}
		in.log.DebugContext(ctx, "receipts conflicted with a concurrent append, deciding again", "try", try, "err", err)
	}
}

func (in *Intake) settleOnce(ctx context.Context, incoming []provider.Receipt, refused []*provider.ReceiptError, messageIDs []string, trace string, try int) (*settlement, error) {
	books, err := in.load(ctx, messageIDs)
	if err != nil {
		return nil, err
	}
	if in.beforeLock != nil {
		in.beforeLock(try)
	}
	now := in.cfg.Now().UTC().Truncate(time.Microsecond)
	d := decider{policy: in.cfg.Retry, now: now, trace: trace}
	s := &settlement{books: books}
	err = in.cfg.Store.InTx(ctx, func(tx *eventstore.Tx) error {
		if err := lockAndVerify(ctx, tx, books); err != nil {
			return err
		}
		parked, err := readHistory(ctx, tx, messageIDs, books)
		if err != nil {
			return err
		}
		s.unparked, s.incoming = parked, make([]*entry, len(incoming))
		for _, e := range parked {
			if err := d.decide(books[e.receipt.MessageID], e); err != nil {
				return err
			}
		}
		for i, r := range incoming {
			s.incoming[i] = &entry{receipt: r}
			if err := d.decide(books[r.MessageID], s.incoming[i]); err != nil {
				return err
			}
		}
		if len(refused) > 0 {
			if err := recordRefusals(ctx, tx, incoming[0].Provider, trace, refused, now); err != nil {
				return err
			}
		}
		return write(ctx, tx, s, now)
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// load reads the messages' streams in one query and folds them.
func (in *Intake) load(ctx context.Context, messageIDs []string) (map[string]*book, error) {
	streams := make([]string, len(messageIDs))
	for i, id := range messageIDs {
		streams[i] = domain.MessageStream(id)
	}
	recorded, err := eventstore.ReadStreams(ctx, in.pool, streams)
	if err != nil {
		return nil, err
	}
	books := make(map[string]*book, len(messageIDs))
	for i, id := range messageIDs {
		rec := recorded[streams[i]]
		events := make([]domain.Event, len(rec))
		for j, r := range rec {
			if events[j], err = r.Decode(); err != nil {
				return nil, fmt.Errorf("load message %s: %w", id, err)
			}
		}
		m, err := domain.LoadMessage(events)
		if err != nil {
			return nil, fmt.Errorf("load message %s: %w", id, err)
		}
		books[id] = newBook(m, len(rec) > 0)
	}
	return books, nil
}

// lockAndVerify locks the messages' streams rows and reports a conflict if
// any moved since load. The streams table is the event store's; taking the
// same row lock its appends take is what serialises the intake with them
// (see the comment at the top of this file).
func lockAndVerify(ctx context.Context, tx *eventstore.Tx, books map[string]*book) error {
	streams := make([]string, 0, len(books))
	for id := range books {
		streams = append(streams, domain.MessageStream(id))
	}
	slices.Sort(streams)
	rows, err := tx.Query(ctx, lockStreamsSQL, streams)
	if err != nil {
		return fmt.Errorf("lock message streams: %w", err)
	}
	heads := make(map[string]int, len(streams))
	for rows.Next() {
		var id string
		var v int
		if err := rows.Scan(&id, &v); err != nil {
			rows.Close()
			return fmt.Errorf("lock message streams: %w", err)
		}
		heads[id] = v
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("lock message streams: %w", err)
	}
	for id, b := range books {
		stream := domain.MessageStream(id)
		if v := heads[stream]; v != b.loaded {
			return &eventstore.ConflictError{Stream: stream, Expected: eventstore.Exact(b.loaded), Actual: v}
		}
	}
	return nil
}

// readHistory folds the messages' applied receipts into their books and
// returns their parked receipts, oldest first, to be decided again.
func readHistory(ctx context.Context, tx *eventstore.Tx, messageIDs []string, books map[string]*book) ([]*entry, error) {
	rows, err := tx.Query(ctx, historySQL, messageIDs)
	if err != nil {
		return nil, fmt.Errorf("read receipts: %w", err)
	}
	defer rows.Close()
	var parked []*entry
	for rows.Next() {
		var e entry
		var failure, raw []byte
		var status, disposition string
		r := &e.receipt
		if err := rows.Scan(&e.id, &r.Provider, &r.ProviderMessageID, &r.MessageID, &r.Attempt, &r.Part, &r.Parts,
			&status, &failure, &r.DoneAt, &raw, &disposition); err != nil {
			return nil, fmt.Errorf("read receipts: %w", err)
		}
		r.Status, r.Raw = provider.ReceiptStatus(status), json.RawMessage(raw)
		if failure != nil {
			r.Failure = new(domain.Failure)
			if err := json.Unmarshal(failure, r.Failure); err != nil {
				return nil, fmt.Errorf("receipt %d: failure: %w", e.id, err)
			}
		}
		if Disposition(disposition) == Parked {
			parked = append(parked, &e)
			continue
		}
		books[r.MessageID].count(*r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read receipts: %w", err)
	}
	return parked, nil
}

// write appends the events and records the receipts, in tx.
func write(ctx context.Context, tx *eventstore.Tx, s *settlement, now time.Time) error {
	var appends []eventstore.StreamAppend
	var linkIDs, linkEvents []string
	var linkAttempts []int32
	for id, b := range s.books {
		if len(b.events) > 0 {
			appends = append(appends, eventstore.StreamAppend{Stream: domain.MessageStream(id),
				Expected: eventstore.Exact(b.loaded), Events: b.events})
		}
		for attempt, ev := range b.resolved {
			linkIDs, linkAttempts, linkEvents = append(linkIDs, id), append(linkAttempts, int32(attempt)), append(linkEvents, ev.String())
		}
	}
	if len(appends) > 0 {
		if _, err := tx.Append(ctx, appends...); err != nil {
			return err
		}
	}
	if err := insertReceipts(ctx, tx, s.incoming, s.books, now); err != nil {
		return err
	}
	if err := updateParked(ctx, tx, s.unparked, s.books, now); err != nil {
		return err
	}
	if len(linkIDs) > 0 {
		if _, err := tx.Exec(ctx, linkPartsSQL, linkIDs, linkAttempts, linkEvents); err != nil {
			return fmt.Errorf("link receipts to events: %w", err)
		}
	}
	return nil
}

// version is the stream version a receipt was decided at: the loaded one
// plus what this batch appends.
func (b *book) version() int32 { return int32(b.loaded + len(b.events)) }

func eventText(id uuid.UUID) string {
	if id == uuid.Nil {
		return ""
	}
	return id.String()
}

func insertReceipts(ctx context.Context, tx *eventstore.Tx, es []*entry, books map[string]*book, now time.Time) error {
	if len(es) == 0 {
		return nil
	}
	n := len(es)
	provs, pmids, mids := make([]string, n), make([]string, n), make([]string, n)
	attempts, parts, partsOf := make([]int32, n), make([]int32, n), make([]int32, n)
	statuses, failures, raws := make([]string, n), make([]string, n), make([]string, n)
	doneAt := make([]time.Time, n)
	dispositions, reasons, events := make([]string, n), make([]string, n), make([]string, n)
	versions := make([]int32, n)
	for i, e := range es {
		r := e.receipt
		provs[i], pmids[i], mids[i] = r.Provider, r.ProviderMessageID, r.MessageID
		attempts[i], parts[i], partsOf[i] = int32(r.Attempt), int32(r.Part), int32(r.Parts)
		statuses[i], raws[i], doneAt[i] = string(r.Status), string(r.Raw), r.DoneAt
		if r.Failure != nil {
			f, err := json.Marshal(r.Failure)
			if err != nil {
				return err
			}
			failures[i] = string(f)
		}
		dispositions[i], reasons[i], events[i] = string(e.disposition), string(e.reason), eventText(e.event)
		versions[i] = books[r.MessageID].version()
	}
	if _, err := tx.Exec(ctx, insertReceiptsSQL, provs, pmids, mids, attempts, parts, partsOf,
		statuses, failures, doneAt, raws, dispositions, reasons, events, now, versions); err != nil {
		return fmt.Errorf("record receipts: %w", err)
	}
	return nil
}

func updateParked(ctx context.Context, tx *eventstore.Tx, es []*entry, books map[string]*book, now time.Time) error {
	if len(es) == 0 {
		return nil
	}
	n := len(es)
	ids := make([]int64, n)
	dispositions, reasons, events := make([]string, n), make([]string, n), make([]string, n)
	versions := make([]int32, n)
	for i, e := range es {
		ids[i] = e.id
		dispositions[i], reasons[i], events[i] = string(e.disposition), string(e.reason), eventText(e.event)
		versions[i] = books[e.receipt.MessageID].version()
	}
	if _, err := tx.Exec(ctx, updateParkedSQL, ids, dispositions, reasons, events, versions, now); err != nil {
		return fmt.Errorf("resolve parked receipts: %w", err)
	}
	return nil
}
