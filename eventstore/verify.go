package eventstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
)

// Problem is one thing Verify found wrong with a stream.
type Problem struct {
	Stream  string
	Version int // 0 when it concerns the whole stream
	Detail  string
}

func (p Problem) String() string {
	if p.Version > 0 {
		return fmt.Sprintf("%s v%d: %s", p.Stream, p.Version, p.Detail)
	}
	return fmt.Sprintf("%s: %s", p.Stream, p.Detail)
}

// VerifyReport summarises a verification run.
type VerifyReport struct {
	Streams  int
	Events   int
	Problems []Problem
}

// FailedStreams lists each stream with at least one problem, once.
func (r VerifyReport) FailedStreams() []string {
	var out []string
	seen := map[string]bool{}
	for _, p := range r.Problems {
		if !seen[p.Stream] {
			seen[p.Stream] = true
			out = append(out, p.Stream)
		}
	}
	return out
}

const verifyEventsSQL = `SELECT stream_id, stream_version, event_id, type, schema_version, data, metadata,
    recorded_at, prev_hash, hash FROM events ORDER BY stream_id, stream_version`

// verifyHeadsSQL finds streams rows that disagree with their events: a
// version or last hash that is not the last event's, or either side missing.
const verifyHeadsSQL = `SELECT coalesce(s.stream_id, e.stream_id), s.version, e.stream_version
FROM streams s
FULL JOIN (SELECT DISTINCT ON (stream_id) stream_id, stream_version, hash
           FROM events ORDER BY stream_id, stream_version DESC) e USING (stream_id)
WHERE s.stream_id IS NULL OR e.stream_id IS NULL
   OR s.version <> e.stream_version OR s.last_hash <> e.hash`

// Verify walks every stream: it recomputes the hash chain, checks that
// versions run 1, 2, 3… without gaps, that the streams table agrees with
// the events, and folds order, message and account streams through their
// domain aggregates so that an illegal lifecycle step or a balance that
// does not add up is reported. It reads the whole store once, stream by
// stream, keeping one stream in memory at a time.
func Verify(ctx context.Context, q Querier, progress func(streams, events int)) (VerifyReport, error) {
	var rep VerifyReport
	rows, err := q.Query(ctx, verifyEventsSQL)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	h := newHasher()
	var cur streamCheck
	flush := func() {
		if cur.stream != "" {
			rep.Problems = append(rep.Problems, cur.finish()...)
			rep.Streams++
			if progress != nil && rep.Streams%10000 == 0 {
				progress(rep.Streams, rep.Events)
			}
		}
	}
	for rows.Next() {
		var r eventRow
		var typ string
		if err := rows.Scan(&r.stream, &r.version, &r.id, &typ, &r.schema, &r.data, &r.meta, &r.recorded, &r.prev, &r.hash); err != nil {
			rows.Close()
			return rep, fmt.Errorf("verify: %w", err)
		}
		r.typ = typ
		if r.stream != cur.stream {
			flush()
			cur = newStreamCheck(r.stream)
		}
		rep.Events++
		cur.add(h, &r)
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	flush()

	heads, err := q.Query(ctx, verifyHeadsSQL)
	if err != nil {
		return rep, fmt.Errorf("verify streams table: %w", err)
	}
	defer heads.Close()
	for heads.Next() {
		var id string
		var sv, ev *int
		if err := heads.Scan(&id, &sv, &ev); err != nil {
			return rep, err
		}
		switch {
		case sv == nil:
			rep.Problems = append(rep.Problems, Problem{Stream: id, Detail: "events without a streams row"})
		case ev == nil:
			rep.Problems = append(rep.Problems, Problem{Stream: id, Detail: fmt.Sprintf("streams row at version %d without events", *sv)})
		default:
			rep.Problems = append(rep.Problems, Problem{Stream: id, Detail: fmt.Sprintf("streams row says version %d / its last hash, events end at version %d with another hash", *sv, *ev)})
		}
	}
	return rep, heads.Err()
}

// VerifyOK runs Verify and turns any problem into an error (for tests and
// for callers that only need a yes or no).
func VerifyOK(ctx context.Context, q Querier) error {
	rep, err := Verify(ctx, q, nil)
	if err != nil {
		return err
	}
	if len(rep.Problems) > 0 {
		var b strings.Builder
		for _, p := range rep.Problems {
			b.WriteString("\n  " + p.String())
		}
		return fmt.Errorf("verify: %d problems:%s", len(rep.Problems), b.String())
	}
	return nil
}

// streamCheck accumulates one stream's verification.
type streamCheck struct {
	stream   string
	version  int
	prev     []byte
	problems []Problem
	fold     func(domain.Event) error
	broken   bool
}

func newStreamCheck(stream string) streamCheck {
	c := streamCheck{stream: stream, prev: genesisHash}
	switch kind, _, _ := domain.SplitStream(stream); kind {
	case domain.KindMessage:
		var m domain.Message
		c.fold = m.Apply
	case domain.KindOrder:
		var o domain.Order
		c.fold = o.Apply
	case domain.KindAccount:
		a := &accountCheck{}
		c.fold = a.apply
	}
	return c
}

func (c *streamCheck) problem(v int, format string, args ...any) {
	c.problems = append(c.problems, Problem{Stream: c.stream, Version: v, Detail: fmt.Sprintf(format, args...)})
}

func (c *streamCheck) add(h *hasher, r *eventRow) {
	if r.version != c.version+1 {
		c.problem(r.version, "version follows %d (gap or duplicate)", c.version)
	}
	c.version = r.version
	if !bytes.Equal(r.prev, c.prev) {
		c.problem(r.version, "prev_hash does not match the previous event's hash (chain broken)")
	}
	sum, err := h.sum(r.prev, r)
	switch {
	case err != nil:
		c.problem(r.version, "cannot hash: %v", err)
	case !bytes.Equal(sum, r.hash):
		c.problem(r.version, "hash does not match the event's content (altered)")
	}
	c.prev = r.hash
	if c.fold == nil || c.broken {
		return
	}
	e, err := domain.Decode(r.typ, r.schema, r.data)
	if err == nil {
		err = c.fold(e)
	}
	if err != nil {
		c.problem(r.version, "%v", err)
		c.broken = true // later steps would only repeat the consequence
	}
}

func (c *streamCheck) finish() []Problem { return c.problems }

// accountCheck folds an account and checks that no message is settled
// (charged or released) twice.
type accountCheck struct {
	a       domain.Account
	settled map[string]struct{}
}

var errSettledTwice = errors.New("message settled twice")

func (c *accountCheck) apply(e domain.Event) error {
	if err := c.a.Apply(e); err != nil {
		return err
	}
	var ids []string
	switch e := e.(type) {
	case domain.BalanceCharged:
		ids = e.MessageIDs
	case domain.BalanceReleased:
		ids = e.MessageIDs
	}
	if c.settled == nil {
		c.settled = map[string]struct{}{}
	}
	for _, id := range ids {
		if _, dup := c.settled[id]; dup {
			return fmt.Errorf("%w: %s", errSettledTwice, id)
		}
		c.settled[id] = struct{}{}
	}
	return nil
}

// ChainLink is one stored event as its stream's hash chain covers it, with
// data and metadata exactly as stored (re-encoding decoded metadata would
// hide a member added to it).
type ChainLink struct {
	Stream        string
	Version       int
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	RecordedAt    time.Time
	Data          []byte
	Metadata      []byte
	PrevHash      []byte
	Hash          []byte
}

// CheckChain recomputes one stream's hash chain from its first event, as
// Verify does for every stream, and says what is wrong (nil: intact). An
// audit of one message's history uses it.
func CheckChain(links []ChainLink) []Problem {
	if len(links) == 0 {
		return nil
	}
	c := streamCheck{stream: links[0].Stream, prev: genesisHash}
	h := newHasher()
	for _, l := range links {
		r := eventRow{stream: l.Stream, version: l.Version, id: l.ID, typ: l.Type, schema: l.SchemaVersion,
			data: l.Data, meta: l.Metadata, recorded: l.RecordedAt, prev: l.PrevHash, hash: l.Hash}
		c.add(h, &r)
	}
	return c.finish()
}
