package callbacks

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
)

// claimSQL takes due deliveries for each endpoint that has any, up to
// its room ($2/$3 name the rooms of the endpoints the sender knows; any
// other gets $1), each ready (the earliest still owed of its endpoint and
// stream), of an enabled endpoint, and holds them for the lease $4 (ms)
// by moving next_attempt_at. It returns what sending needs: the event,
// the URL and the live secrets, newest first.
//
// The endpoints with ready deliveries are found by a skip scan of
// webhook_deliveries_ready (one index probe per endpoint), and each one's
// due deliveries read from the same index: an endpoint that is full, or
// whose breaker is open, costs the claim nothing, however much it is owed.
const claimSQL = `-- name: webhooks.claim
WITH RECURSIVE hooks AS (
  (SELECT d.webhook_id FROM webhook_deliveries d WHERE d.ready ORDER BY d.webhook_id LIMIT 1)
  UNION ALL
  SELECT (SELECT d.webhook_id FROM webhook_deliveries d WHERE d.ready AND d.webhook_id > h.webhook_id ORDER BY d.webhook_id LIMIT 1)
  FROM hooks h WHERE h.webhook_id IS NOT NULL),
due AS (
  SELECT x.tid FROM hooks h
  JOIN webhook_endpoints w ON w.webhook_id = h.webhook_id AND w.enabled
  LEFT JOIN unnest($2::text[], $3::int[]) AS r(webhook_id, room) ON r.webhook_id = h.webhook_id
  CROSS JOIN LATERAL (
    SELECT d.ctid AS tid FROM webhook_deliveries d
    WHERE d.webhook_id = h.webhook_id AND d.ready AND d.next_attempt_at <= now()
    ORDER BY d.next_attempt_at LIMIT coalesce(r.room, $1)
    FOR UPDATE OF d SKIP LOCKED) x
  WHERE coalesce(r.room, $1) > 0),
claimed AS (
  UPDATE webhook_deliveries d SET next_attempt_at = now() + $4::bigint * interval '1 millisecond'
  WHERE d.ctid = ANY(ARRAY(SELECT tid FROM due))
  RETURNING d.webhook_id, d.position, d.attempt)
SELECT c.webhook_id, c.attempt, w.url,
  (SELECT array_agg(s.secret ORDER BY s.created_at DESC) FROM webhook_secrets s
   WHERE s.webhook_id = c.webhook_id AND (s.expires_at IS NULL OR s.expires_at > now())),
  e.global_position, e.stream_id, e.stream_version, e.event_id, e.type, e.schema_version, e.account_id, e.data, e.metadata, e.recorded_at
FROM claimed c JOIN webhook_endpoints w ON w.webhook_id = c.webhook_id JOIN events e ON e.global_position = c.position`

// releaseSQL makes held deliveries due at once (a claim beyond an
// endpoint's room; what a stopping process still holds).
const releaseSQL = `-- name: webhooks.release
UPDATE webhook_deliveries d SET next_attempt_at = now()
FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(webhook_id, stream_id, position)
WHERE d.webhook_id = u.webhook_id AND d.stream_id = u.stream_id AND d.position = u.position`

type deliveryKey struct {
	webhook, stream string
	position        int64
}

// delivery is one claimed delivery: one attempt to make.
type delivery struct {
	webhookID string
	attempt   int // this attempt's number
	url       string
	secrets   []string
	event     eventstore.RecordedEvent
	claimedAt time.Time
}

func (v *delivery) key() deliveryKey {
	return deliveryKey{v.webhookID, v.event.StreamID, v.event.Position}
}

// endpoint is the sender's view of one endpoint: its queue of claimed
// deliveries, its requests in flight and its breaker.
type endpoint struct {
	id       string
	queue    []*delivery
	inflight int
	failures int       // consecutive
	openAt   time.Time // breaker: open until then
	cooldown time.Duration
	// slowUntil: a direct request of the fan-out was still out at its
	// batch's budget; until then the endpoint's events go the retry
	// path's way (direct.go).
	slowUntil time.Time
	slowFor   time.Duration
}

// room is how many more deliveries the endpoint takes now: a queue of
// 32 per request it may have in flight (at least two claims' worth, so a
// lone busy endpoint does not make every claim release its overflow), none while its breaker is open,
// one at a time while it is half open (the first attempt after the
// cooldown).
func (d *Deliverer) room(ep *endpoint, now time.Time) int {
	switch {
	case now.Before(ep.openAt):
		return 0
	case ep.failures >= d.cfg.BreakerThreshold:
		return max(0, 1-ep.inflight-len(ep.queue))
	}
	return max(0, max(d.cfg.Concurrency*32, 2*d.cfg.BatchSize)-ep.inflight-len(ep.queue))
}

func (d *Deliverer) endpoint(id string) *endpoint {
	ep := d.endpoints[id]
	if ep == nil {
		ep = &endpoint{id: id}
		d.endpoints[id] = ep
	}
	return ep
}

// send claims and hands out deliveries until ctx ends.
func (d *Deliverer) send(ctx context.Context) {
	poll := time.NewTimer(d.cfg.Poll)
	defer poll.Stop()
	for ctx.Err() == nil {
		n, err := d.claim(ctx)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("claim deliveries", "err", err)
			eventstore.Sleep(ctx, time.Second)
			continue
		}
		if n >= d.cfg.BatchSize {
			continue // more are due
		}
		poll.Reset(d.cfg.Poll)
		select {
		case <-ctx.Done():
		case <-d.wake:
		case <-poll.C:
		}
	}
}

// claim takes one batch of due deliveries and queues them on their
// endpoints. Deliveries beyond an endpoint's room are released at once
// (the claim cannot know rooms per endpoint; this is rare, as full
// endpoints are left out of it).
func (d *Deliverer) claim(ctx context.Context) (int, error) {
	now := d.cfg.Now()
	d.mu.Lock()
	known, rooms := []string{}, []int32{}
	for id, ep := range d.endpoints {
		if ep.inflight == 0 && len(ep.queue) == 0 && ep.failures == 0 && ep.slowFor == 0 {
			delete(d.endpoints, id) // idle: forget it, so the map stays small
			continue
		}
		known, rooms = append(known, id), append(rooms, int32(min(d.room(ep, now), d.cfg.BatchSize)))
	}
	d.mu.Unlock()
	// Planned at each run (no cached generic plan): how many deliveries
	// are owed swings from none to a burst's tens of thousands, and a plan
	// made for one is a disaster for the other (a generic plan of an
	// earlier claim scanned and sorted the whole table).
	rows, err := d.cfg.Store.Pool().Query(ctx, claimSQL, pgx.QueryExecModeExec, d.cfg.BatchSize, known, rooms, d.cfg.Lease.Milliseconds())
	if err != nil {
		return 0, err
	}
	var got []*delivery
	for rows.Next() {
		v := &delivery{claimedAt: now}
		e := &v.event
		if err := rows.Scan(&v.webhookID, &v.attempt, &v.url, &v.secrets, &e.Position, &e.StreamID, &e.Version, &e.ID, &e.Type,
			&e.SchemaVersion, &e.AccountID, &e.Data, &e.Metadata, &e.RecordedAt); err != nil {
			rows.Close()
			return 0, err
		}
		v.attempt++
		got = append(got, v)
	}
	if err := rows.Err(); err != nil {
		return 0, err
	}
	var over []*delivery
	d.mu.Lock()
	for _, v := range got {
		ep := d.endpoint(v.webhookID)
		if d.room(ep, now) == 0 {
			over = append(over, v)
			continue
		}
		d.claimed[v.key()] = now
		ep.queue = append(ep.queue, v)
		if ep.inflight < d.cfg.Concurrency {
			ep.inflight++
			d.workers.Add(1)
			go func() {
				defer d.workers.Done()
				d.work(ctx, ep)
			}()
		}
	}
	d.mu.Unlock()
	if len(over) > 0 {
		if err := d.releaseAll(ctx, over); err != nil {
			return len(got), err
		}
	}
	return len(got), nil
}

func (d *Deliverer) releaseAll(ctx context.Context, vs []*delivery) error {
	hooks, streams, positions := make([]string, len(vs)), make([]string, len(vs)), make([]int64, len(vs))
	for i, v := range vs {
		hooks[i], streams[i], positions[i] = v.webhookID, v.event.StreamID, v.event.Position
	}
	_, err := d.cfg.Store.Pool().Exec(ctx, releaseSQL, hooks, streams, positions)
	return err
}

// release gives back, on stop, every delivery held and not recorded, so a
// restart sends them at once instead of after the lease.
func (d *Deliverer) release() {
	d.mu.Lock()
	var vs []*delivery
	for k := range d.claimed {
		vs = append(vs, &delivery{webhookID: k.webhook, event: eventstore.RecordedEvent{StreamID: k.stream, Position: k.position}})
	}
	d.claimed = map[deliveryKey]time.Time{}
	d.mu.Unlock()
	if len(vs) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.releaseAll(ctx, vs); err != nil {
		d.log.Warn("release held deliveries", "err", err, "count", len(vs))
	}
}

// work sends an endpoint's queued deliveries, one at a time, until the
// queue is empty; up to Concurrency of these run per endpoint.
func (d *Deliverer) work(ctx context.Context, ep *endpoint) {
	for {
		d.mu.Lock()
		if len(ep.queue) == 0 || ctx.Err() != nil {
			ep.inflight--
			d.mu.Unlock()
			return
		}
		v := ep.queue[0]
		ep.queue = ep.queue[1:]
		d.mu.Unlock()
		// A delivery that waited in the queue close to its lease's end
		// is left to its lease: sending it now could race the process
		// that claims it again.
		if d.cfg.Now().Sub(v.claimedAt) > d.sendBy() {
			d.mu.Lock()
			delete(d.claimed, v.key())
			d.mu.Unlock()
			continue
		}
		r := d.attempt(ctx, v)
		if ctx.Err() != nil && r.err != nil {
			// Stopping: the request was cut short by us, not by the
			// endpoint. It is released (or left to its lease), not
			// counted as a failure.
			continue
		}
		d.breaker(ep, r)
		select {
		case d.results <- r:
		case <-ctx.Done():
			if !d.cfg.Hooks.Abandon {
				d.results <- r // the recorder drains until the results close
			}
		}
	}
}

// sendBy is how long after its claim a delivery may still be sent: its
// attempt must end (Timeout) before its lease does, with a margin.
func (d *Deliverer) sendBy() time.Duration {
	by := d.cfg.Lease - d.cfg.Timeout - min(5*time.Second, d.cfg.Lease/4)
	return max(by, d.cfg.Lease/4)
}

// result is one finished attempt.
type result struct {
	v          *delivery
	at         time.Time
	status     int // 0: no answer
	err        error
	duration   time.Duration
	excerpt    string
	retryAfter time.Duration
	received   time.Time
}

func (r *result) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

// maxExcerpt is how much of a response body is read and kept.
const maxExcerpt = 1024

// attempt makes one request.
func (d *Deliverer) attempt(ctx context.Context, v *delivery) result {
	body, err := callbackBody(&v.event)
	if err != nil {
		return result{v: v, at: d.cfg.Now(), err: err}
	}
	start := d.cfg.Now()
	r := result{v: v, at: start}
	id := v.event.ID.String()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.url, bytes.NewReader(body))
	if err != nil {
		r.err = err
		return r
	}
	h := req.Header
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", "afterok-webhooks/1")
	h.Set("webhook-id", id)
	h.Set("webhook-timestamp", strconv.FormatInt(start.Unix(), 10))
	h.Set("webhook-signature", Sign(v.secrets, id, start.Unix(), body))
	res, err := d.client.Do(req)
	if err != nil {
		r.err, r.duration = err, d.cfg.Now().Sub(start)
		return r
	}
	r.received = d.cfg.Now()
	b, _ := io.ReadAll(io.LimitReader(res.Body, maxExcerpt))
	res.Body.Close()
	r.status, r.duration, r.excerpt = res.StatusCode, d.cfg.Now().Sub(start), text(b)
	if res.StatusCode == http.StatusTooManyRequests || res.StatusCode == http.StatusServiceUnavailable {
		r.retryAfter = retryAfter(res.Header.Get("Retry-After"), start)
	}
	return r
}

// callbackBody is {"type", "timestamp", "data": the envelope}.
func callbackBody(e *eventstore.RecordedEvent) ([]byte, error) {
	b := make([]byte, 0, 384+len(e.Data))
	b = append(b, `{"type":"`...)
	b = append(b, e.Type...) // a Go type name: no character to escape
	b = append(b, `","timestamp":"`...)
	b = e.RecordedAt.UTC().AppendFormat(b, "2006-01-02T15:04:05.000000Z07:00")
	b = append(b, `","data":`...)
	b, err := eventstore.AppendEnvelope(b, e)
	return append(b, '}'), err
}

// text makes a response excerpt storable: valid UTF-8, no NUL.
func text(b []byte) string {
	s := strings.ToValidUTF8(string(b), "\uFFFD")
	if !utf8.ValidString(s) {
		return ""
	}
	return strings.ReplaceAll(s, "\x00", "")
}

// retryAfter reads a Retry-After header (seconds or an HTTP date), at most
// a day.
func retryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), 24*time.Hour)
}

// breaker counts the endpoint's consecutive failures; at the threshold it
// opens for the cooldown, doubling (to 10 min) while the probe after it
// fails; a success closes it.
func (d *Deliverer) breaker(ep *endpoint, r result) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if r.ok() {
		ep.failures, ep.cooldown = 0, 0
		if ep.slowFor > 0 && !r.at.Before(ep.slowUntil) && r.duration < d.slowAnswer() {
			ep.slowFor = 0 // answering in time again
		}
		return
	}
	ep.failures++
	if ep.failures >= d.cfg.BreakerThreshold && !r.at.Before(ep.openAt) {
		ep.cooldown = min(max(ep.cooldown*2, d.cfg.BreakerCooldown), 10*time.Minute)
		ep.openAt = d.cfg.Now().Add(ep.cooldown)
		d.log.Warn("webhook endpoint failing: breaker open", "webhook_id", ep.id, "failures", ep.failures, "for", ep.cooldown.String())
		d.metrics.breakerOpened.Inc()
	}
}

func describe(r *result) string {
	switch {
	case r.err != nil:
		var msg = r.err.Error()
		if len(msg) > 500 {
			msg = msg[:500]
		}
		return msg
	case r.status < 200 || r.status >= 300:
		return fmt.Sprintf("HTTP %d", r.status)
	}
	return ""
}
