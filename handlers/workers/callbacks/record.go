package callbacks

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// recordSQL writes a batch of attempts in one statement: each attempt's
// log row, and its delivery's new state: gone when it succeeded or is
// exhausted (next is NULL), rescheduled with its attempt count when not.
// The endpoints' failing_since follows: cleared by a success, set by the
// first failure of a run; the endpoints still failing come back with it.
var recordSQL = `-- name: webhooks.record
WITH r AS (
  SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::int[], $7::int[], $8::text[],
                       $9::int[], $10::text[], $11::timestamptz[], $12::timestamptz[], $13::text[])
    AS r(webhook_id, stream_id, position, event_id, event_type, attempt, status_code, error, duration_ms, excerpt, at, next, outcome)),
logged AS (
  INSERT INTO webhook_attempts (webhook_id, event_id, event_type, stream_id, attempt, status_code, error, duration_ms,
                                response_excerpt, at, next_attempt_at, outcome)
  SELECT webhook_id, event_id, event_type, stream_id, attempt, status_code, error, duration_ms, excerpt, at, next, outcome FROM r),
done AS (
  DELETE FROM webhook_deliveries d USING r
  WHERE r.next IS NULL AND d.webhook_id = r.webhook_id AND d.stream_id = r.stream_id AND d.position = r.position),
retry AS (
  UPDATE webhook_deliveries d SET attempt = r.attempt, next_attempt_at = r.next FROM r
  WHERE r.next IS NOT NULL AND d.webhook_id = r.webhook_id AND d.stream_id = r.stream_id AND d.position = r.position),
` + endpointHealthSQL(14)

// endpointHealthSQL ends recordSQL and directSQL: the endpoints'
// failing_since, cleared for those in the text array $healthy, set (if
// not yet) for those in $healthy+1 with the times in $healthy+2, the rows
// locked first in one order; it returns the endpoints still failing with
// the start of their run.
func endpointHealthSQL(healthy int) string {
	failing, since := healthy+1, healthy+2
	return fmt.Sprintf(`-- The endpoint rows this changes, locked first and in one order: the
-- fan-out and the recorders write them at once, and two statements that
-- lock them in different orders deadlock.
lk AS MATERIALIZED (
  SELECT w.webhook_id FROM webhook_endpoints w
  WHERE (w.webhook_id = ANY($%[1]d::text[]) AND w.failing_since IS NOT NULL) OR w.webhook_id = ANY($%[2]d::text[])
  ORDER BY w.webhook_id FOR UPDATE),
healthy AS (
  UPDATE webhook_endpoints w SET failing_since = NULL
  WHERE w.webhook_id = ANY($%[1]d::text[]) AND w.failing_since IS NOT NULL AND EXISTS (SELECT 1 FROM lk))
UPDATE webhook_endpoints w SET failing_since = coalesce(w.failing_since, f.since)
FROM unnest($%[2]d::text[], $%[3]d::timestamptz[]) AS f(webhook_id, since)
WHERE w.webhook_id = f.webhook_id AND EXISTS (SELECT 1 FROM lk)
RETURNING w.webhook_id, w.failing_since`, healthy, failing, since)
}

// promoteSQL makes the first delivery still owed of each given (webhook,
// stream) ready: after recordSQL, in its transaction (with a snapshot of
// its own), for the pairs whose delivery just went; and after a fan-out
// committed, for the pairs it left waiting (fanout.go).
const promoteSQL = `-- name: webhooks.promote
UPDATE webhook_deliveries d SET ready = true
FROM (SELECT DISTINCT ON (x.webhook_id, x.stream_id) x.webhook_id, x.stream_id, x.position, x.ready
      FROM webhook_deliveries x
      JOIN unnest($1::text[], $2::text[]) AS k(webhook_id, stream_id) ON x.webhook_id = k.webhook_id AND x.stream_id = k.stream_id
      ORDER BY x.webhook_id, x.stream_id, x.position) h
WHERE NOT h.ready AND d.webhook_id = h.webhook_id AND d.stream_id = h.stream_id AND d.position = h.position`

// orphansSQL is the safety net of the ready rule: the first delivery
// owed of a (webhook, stream) that is not ready (a fan-out or a replay
// that raced a recorder past promoteAfterFanOut) is made ready. It walks
// the table; it runs every second, and logs what it finds (it should be
// rare: each one is a callback up to a second late).
const orphansSQL = `-- name: webhooks.orphans
UPDATE webhook_deliveries d SET ready = true
FROM (SELECT DISTINCT ON (webhook_id, stream_id) webhook_id, stream_id, position, ready
      FROM webhook_deliveries ORDER BY webhook_id, stream_id, position) h
WHERE NOT h.ready AND d.webhook_id = h.webhook_id AND d.stream_id = h.stream_id AND d.position = h.position`

// record writes results as they come, in batches: whatever arrives
// within 5 ms of the first, up to 1,000, so one statement serves many
// attempts under load and a lone attempt waits 5 ms.
func (d *Deliverer) record(ctx context.Context) {
	var batch []result
	linger := time.NewTimer(0)
	defer linger.Stop()
	for r := range d.results {
		batch = append(batch[:0], r)
		// Gather what comes within a few milliseconds: under load a flush
		// costs about the same for 10 results as for 1,000.
		linger.Reset(5 * time.Millisecond)
	more:
		for len(batch) < 1000 {
			select {
			case r, ok := <-d.results:
				if !ok {
					break more
				}
				batch = append(batch, r)
			case <-linger.C:
				break more
			}
		}
		if d.cfg.Hooks.BeforeRecord != nil {
			d.cfg.Hooks.BeforeRecord(ctx)
		}
		if ctx.Err() != nil && d.cfg.Hooks.Abandon {
			continue // killed: nothing more is written
		}
		d.flush(batch)
	}
}

// flush writes one batch, retrying while the database is away (the
// results are what the receivers were told; losing them would only mean
// sending again, but the attempt log would miss them).
func (d *Deliverer) flush(batch []result) {
	n := len(batch)
	a := newAttemptRows(n)
	for i := range batch {
		outcome, next := d.classify(&batch[i])
		a.add(&batch[i], outcome, next)
	}
	failIDs, failAt := a.failing()
	var doneHooks, doneStreams []string
	finished := map[[2]string]bool{}
	for i := range batch {
		k := [2]string{a.hooks[i], a.streams[i]}
		if a.next[i] == nil && !finished[k] {
			finished[k] = true
			doneHooks, doneStreams = append(doneHooks, k[0]), append(doneStreams, k[1])
		}
	}
	var failing map[string]time.Time
	for try := 0; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var err error
		failing, err = d.write(ctx, [][]string{doneHooks, doneStreams}, a.hooks, a.streams, a.positions, a.ids, a.types, a.attempts,
			a.statuses, a.errs, a.durations, a.excerpts, a.at, a.next, a.outcomes, a.healthy, failIDs, failAt)
		cancel()
		if err == nil {
			break
		}
		d.log.Warn("record webhook attempts", "err", err, "attempts", n, "try", try+1)
		if try == 20 {
			d.log.Error("webhook attempts not recorded: their deliveries are sent again after the lease", "attempts", n)
			break
		}
		time.Sleep(time.Second)
	}
	d.mu.Lock()
	for i := range batch {
		delete(d.claimed, batch[i].v.key())
	}
	d.mu.Unlock()
	d.Wake() // the next event of each stream may be due now
	d.disableAfter(a.gone, failing)
}

// disableAfter disables the endpoints that answered 410 and those whose
// every attempt failed for DisableAfter.
func (d *Deliverer) disableAfter(gone []string, failing map[string]time.Time) {
	now := d.cfg.Now()
	for _, id := range gone {
		d.disable(id, "the endpoint answered 410 Gone", "gone")
	}
	for id, since := range failing {
		if now.Sub(since) >= d.cfg.DisableAfter {
			d.disable(id, fmt.Sprintf("every attempt failed for %s (since %s)", d.cfg.DisableAfter, since.UTC().Format(time.RFC3339)), "failing")
		}
	}
}

// write runs record and promote in one round trip: a batch is one
// implicit transaction.
func (d *Deliverer) write(ctx context.Context, done [][]string, args ...any) (map[string]time.Time, error) {
	b := &pgx.Batch{}
	b.Queue(recordSQL, args...)
	b.Queue(promoteSQL, done[0], done[1])
	br := d.cfg.Store.Pool().SendBatch(ctx, b)
	defer br.Close()
	rows, err := br.Query()
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for rows.Next() {
		var id string
		var since time.Time
		if err := rows.Scan(&id, &since); err != nil {
			rows.Close()
			return nil, err
		}
		out[id] = since
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if _, err := br.Exec(); err != nil {
		return nil, err
	}
	return out, br.Close()
}

// runOrphans runs orphansSQL every interval.
func (d *Deliverer) runOrphans(ctx context.Context, every time.Duration) {
	for {
		eventstore.Sleep(ctx, every)
		if ctx.Err() != nil {
			return
		}
		tag, err := d.cfg.Store.Pool().Exec(ctx, orphansSQL)
		switch {
		case err != nil && ctx.Err() == nil:
			d.log.Warn("webhook deliveries: orphan check", "err", err)
		case err == nil && tag.RowsAffected() > 0:
			d.log.Info("webhook deliveries made ready by the orphan check", "count", tag.RowsAffected())
			d.Wake()
		}
	}
}

func (d *Deliverer) disable(id, reason, kind string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ok, err := d.cfg.Webhooks.Disable(ctx, id, reason, "webhooks")
	switch {
	case err != nil:
		d.log.Error("disable webhook endpoint", "webhook_id", id, "err", err)
	case ok:
		d.log.Warn("webhook endpoint disabled", "webhook_id", id, "reason", reason)
		d.metrics.disabled.WithLabelValues(kind).Inc()
	}
}

// logAttempt writes the attempt's line: failures at warn (a support
// person's first look), successes at debug. Never the secret or the body.
func (d *Deliverer) logAttempt(r *result, outcome string, next *time.Time) {
	v := r.v
	attrs := []any{"webhook_id", v.webhookID, "event_id", v.event.ID.String(), "event_type", v.event.Type, "attempt", v.attempt,
		"status", r.status, "outcome", outcome, "duration_ms", r.duration.Milliseconds()}
	if r.err != nil {
		attrs = append(attrs, "err", describe(r))
	}
	if next != nil {
		attrs = append(attrs, "next_attempt_at", next.UTC().Format(time.RFC3339))
	}
	if outcome == webhooks.OutcomeSucceeded {
		d.log.Debug("webhook attempt", attrs...)
		return
	}
	d.log.Warn("webhook attempt", attrs...)
}

// runJanitor deletes attempt-log rows older than AttemptsKeep, in slices,
// every interval.
func (d *Deliverer) runJanitor(ctx context.Context, every time.Duration) {
	for {
		for ctx.Err() == nil {
			// The oldest by seq (the primary key): at rises with seq, give
			// or take a batch's spread.
			tag, err := d.cfg.Store.Pool().Exec(ctx, `-- name: webhooks.janitor
DELETE FROM webhook_attempts WHERE seq IN (
  SELECT seq FROM (SELECT seq, at FROM webhook_attempts ORDER BY seq LIMIT 5000) o WHERE o.at < now() - $1::interval)`, d.cfg.AttemptsKeep)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Warn("webhook attempts janitor", "err", err)
				}
				break
			}
			if tag.RowsAffected() < 5000 {
				break
			}
		}
		eventstore.Sleep(ctx, every)
		if ctx.Err() != nil {
			return
		}
	}
}

// MaintainedTables are the tables the deliverer wants eventstore.Maintain
// to look after. A delivery row lives from fan-out to success and is
// updated twice on the way (claimed, made ready): three dead rows, and
// their index entries, per callback, which the claim's index walks would
// step over until a vacuum; so every 10 s.
var MaintainedTables = []eventstore.Table{{Name: "webhook_deliveries", Every: 10 * time.Second},
	{Name: "webhook_attempts", Every: time.Minute, AnalyzeOnly: true}, {Name: "webhook_endpoints", Every: time.Minute}}
