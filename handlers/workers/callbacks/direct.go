package callbacks

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// The direct path.
//
// Most callbacks succeed at the first attempt, and for those a delivery
// row is pure cost: inserted by the fan-out, updated by the claim, made
// ready, deleted by the record, three dead tuples and their index entries
// each, about 1.5 ms of PostgreSQL per callback measured under load. So the
// fan-out sends what it can itself, inside its batch: it matches the
// batch's events to the endpoints, POSTs them (each (endpoint, stream)
// in version order, one request at a time per pair, the endpoint's
// concurrency shared with the retry path), and then writes, in the
// consumer's transaction and so with its checkpoint, one statement: the
// attempt log rows, and delivery rows only for what did not succeed:
//
//   - a failed attempt becomes a delivery owed with its attempt count and
//     next_attempt_at, ready (it heads its pair); the pair's later events
//     of the batch are owed behind it, not sent;
//   - a request still unanswered after half the budget (DirectBudget),
//     or when the batch's budget ends, is handed over: owed as if claimed
//     (held for the lease, attempt count unchanged), and its answer, once
//     the batch has committed, goes to the recorders like any claimed
//     delivery's. After half the budget the endpoint is slow, and goes the
//     retry path's way for a while (2 s, doubling while it stays slow, at
//     most 30 s), so a slow endpoint holds a batch back by at most half
//     the budget, once per such while;
//   - an endpoint whose breaker is open or that is marked slow, and a pair
//     with a delivery still owed (a retry pending, a replay), get delivery
//     rows as before the direct path existed.
//
// A crash anywhere before the commit sends the batch again after the
// restart: at-least-once, with the same webhook-id. The transaction holds
// no transaction id while the requests are out (nothing is written before
// they end), so it holds no tail reader back.

// matchSQL finds, for a batch, each event's enabled endpoints that take
// its type (recorded after the endpoint was created), with what sending
// needs, and whether the (endpoint, stream) has a delivery still owed.
const matchSQL = `-- name: webhooks.match
WITH m AS MATERIALIZED (
  SELECT u.i, w.webhook_id, w.url, u.stream_id
  FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) WITH ORDINALITY AS u(account_id, stream_id, type, recorded_at, i)
  JOIN webhook_endpoints w ON w.account_id = u.account_id AND w.enabled AND w.deleted_at IS NULL
       AND w.created_at <= u.recorded_at AND u.type = ANY(w.event_types)),
s AS MATERIALIZED (
  SELECT webhook_id, array_agg(secret ORDER BY created_at DESC) AS secrets FROM webhook_secrets
  WHERE webhook_id IN (SELECT webhook_id FROM m) AND (expires_at IS NULL OR expires_at > now())
  GROUP BY webhook_id)
SELECT m.i - 1, m.webhook_id, m.url, coalesce(s.secrets, '{}'),
  EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = m.webhook_id AND d.stream_id = m.stream_id)
FROM m LEFT JOIN s USING (webhook_id)
ORDER BY m.i, m.webhook_id`

// Per-stream order across batches.
//
// The tail is ordered by (transaction id, position), and a transaction's
// id is assigned at its first write: one that wrote something else first
// and then appended version 5 of a stream whose version 4 a younger
// transaction committed meanwhile stores version 5 under the smaller id,
// and the tail brings 5 before 4, possibly in an earlier batch. The
// projectors read the missing versions from the store (projections'
// inVersionOrder); the fan-out does the same without keeping any state:
// orderSQL reads, from the events table, where every version of the
// batch's streams is in the tail, which tells the batch's events that come
// early (an earlier version of their stream is later in the tail) and
// late (a later version was earlier in the tail, and brought this one
// with it). Early ones get their missing predecessors read from the
// store (committed: an append locks its stream) and sent first; late
// ones are dropped as sent. Only events of the types the fan-out reads
// count: the others never bring anything along.
const orderSQL = `-- name: webhooks.order
SELECT stream_id, stream_version, xid, global_position FROM events
WHERE stream_id = ANY($1::text[]) AND type = ANY($2::text[])`

// accountsSQL names which of the batch's accounts have an enabled endpoint.
const accountsSQL = `-- name: webhooks.accounts
SELECT DISTINCT account_id FROM webhook_endpoints
WHERE account_id = ANY($1::text[]) AND enabled AND deleted_at IS NULL`

// withEndpoints keeps the events of accounts that have an enabled
// endpoint: most accounts have none, and their events need neither the
// stream-order read nor the match. An endpoint created after this read
// would not match the batch's events anyway (they were recorded before it).
func (d *Deliverer) withEndpoints(ctx context.Context, batch []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, error) {
	var accounts []string
	seen := map[string]bool{}
	for _, e := range batch {
		if e.AccountID != "" && !seen[e.AccountID] {
			seen[e.AccountID] = true
			accounts = append(accounts, e.AccountID)
		}
	}
	if len(accounts) == 0 {
		return nil, nil
	}
	rows, err := d.cfg.Store.Pool().Query(ctx, accountsSQL, accounts)
	if err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}
	with, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("endpoints: %w", err)
	}
	if len(with) == len(accounts) {
		return batch, nil
	}
	keep := make(map[string]bool, len(with))
	for _, a := range with {
		keep[a] = true
	}
	out := make([]eventstore.RecordedEvent, 0, len(batch))
	for _, e := range batch {
		if keep[e.AccountID] {
			out = append(out, e)
		}
	}
	return out, nil
}

// inStreamOrder returns the batch with its late events dropped and the
// missing predecessors of its early ones put before them. It reads the
// tail positions of every version of the batch's streams (one index scan
// per stream) and decides in Go.
func (d *Deliverer) inStreamOrder(ctx context.Context, batch []eventstore.RecordedEvent) ([]eventstore.RecordedEvent, error) {
	var streams []string
	seenStream := map[string]bool{}
	for _, e := range batch {
		if !seenStream[e.StreamID] {
			seenStream[e.StreamID] = true
			streams = append(streams, e.StreamID)
		}
	}
	types := domain.WebhookEventTypes()
	rows, err := d.cfg.Store.Pool().Query(ctx, orderSQL, streams, types)
	if err != nil {
		return nil, fmt.Errorf("stream order: %w", err)
	}
	type at struct {
		version int
		cursor  eventstore.Cursor
	}
	versions := map[string][]at{}
	for rows.Next() {
		var stream string
		var a at
		if err := rows.Scan(&stream, &a.version, &a.cursor.XID, &a.cursor.Position); err != nil {
			rows.Close()
			return nil, fmt.Errorf("stream order: %w", err)
		}
		versions[stream] = append(versions[stream], a)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("stream order: %w", err)
	}
	early, late := map[int]bool{}, map[int]bool{}
	for i, e := range batch {
		c := e.Cursor()
		for _, a := range versions[e.StreamID] {
			switch {
			case a.version < e.Version && c.Less(a.cursor):
				early[i] = true
			case a.version > e.Version && a.cursor.Less(c):
				late[i] = true
			}
		}
	}
	if len(early) == 0 && len(late) == 0 {
		return batch, nil
	}
	out := make([]eventstore.RecordedEvent, 0, len(batch))
	seen := map[uuid.UUID]bool{}
	for i, e := range batch {
		if late[i] {
			continue // sent with the later version that came before it
		}
		if early[i] {
			stored, err := eventstore.ReadStream(ctx, d.cfg.Store.Pool(), e.StreamID, 1)
			if err != nil {
				return nil, fmt.Errorf("stream order: %w", err)
			}
			for _, p := range stored {
				if p.Version < e.Version && e.Cursor().Less(p.Cursor()) && slices.Contains(types, p.Type) && !seen[p.ID] {
					seen[p.ID] = true
					out = append(out, p)
				}
			}
		}
		if !seen[e.ID] {
			seen[e.ID] = true
			out = append(out, e)
		}
	}
	return out, nil
}

// directSQL writes what a batch's direct sends leave: their attempt log
// rows, the deliveries still owed, and the endpoints' failing_since (as
// recordSQL does).
var directSQL = `-- name: webhooks.direct
WITH r AS (
  SELECT * FROM unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::int[], $7::text[], $8::int[],
                       $9::text[], $10::timestamptz[], $11::timestamptz[], $12::text[])
    AS r(webhook_id, event_id, event_type, stream_id, attempt, status_code, error, duration_ms, excerpt, at, next, outcome)),
logged AS (
  INSERT INTO webhook_attempts (webhook_id, event_id, event_type, stream_id, attempt, status_code, error, duration_ms,
                                response_excerpt, at, next_attempt_at, outcome)
  SELECT webhook_id, event_id, event_type, stream_id, attempt, status_code, error, duration_ms, excerpt, at, next, outcome FROM r),
owed AS (
  INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, attempt, ready, next_attempt_at)
  SELECT * FROM unnest($13::text[], $14::text[], $15::bigint[], $16::uuid[], $17::text[], $18::int[], $19::bool[], $20::timestamptz[])
  ON CONFLICT DO NOTHING),
` + endpointHealthSQL(21)

// An endpoint that left a request unanswered for slowAnswer goes the
// retry path's way for a while: 2 s the first time, doubling while it
// keeps being slow, at most 30 s; a direct answer in time after that
// forgets it.
const (
	slowFirst = 2 * time.Second
	slowMost  = 30 * time.Second
)

// slowAnswer is how long a direct request may go unanswered before it is
// handed over: half the budget.
func (d *Deliverer) slowAnswer() time.Duration { return d.cfg.DirectBudget / 2 }

// slow marks an endpoint slow.
func (d *Deliverer) slow(ep *endpoint, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if now.Before(ep.slowUntil) {
		return // one slow while, however many requests it left unanswered
	}
	ep.slowFor = min(max(2*ep.slowFor, slowFirst), slowMost)
	ep.slowUntil = now.Add(ep.slowFor)
	d.log.Info("webhook endpoint slow: its callbacks go through delivery rows for now", "webhook_id", ep.id, "for", ep.slowFor.String())
}

// match is one (endpoint, event) of a batch.
type match struct {
	v    *delivery
	owed bool // its (endpoint, stream) has a delivery still owed
}

// owedRow is a delivery the batch leaves owed.
type owedRow struct {
	v       *delivery
	attempt int // attempts already made (and logged)
	ready   bool
	next    time.Time
}

// directBatch is what one fan-out batch sends and leaves.
type directBatch struct {
	mu      sync.Mutex
	results []result  // answered within the budget
	owed    []owedRow // what the batch leaves owed
	// handed are the requests still out at the budget's end; their
	// answers wait for the batch's fate (decided) to go to the recorders
	// or be dropped.
	handed    []*delivery
	decided   chan struct{}
	committed bool
	// after the write: endpoints that answered 410, and those still
	// failing with the start of their run of failures
	gone    []string
	failing map[string]time.Time
}

// pair is an (endpoint, stream).
type pair struct{ webhook, stream string }

// fanOutBatch matches a batch, sends what may go directly and writes what
// is left, in tx.
func (d *Deliverer) fanOutBatch(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) (int, error) {
	d.decide(false) // a batch before this one that did not commit
	d.waiting = d.waiting[:0]
	batch, err := d.withEndpoints(ctx, batch)
	if err != nil || len(batch) == 0 {
		return 0, err
	}
	batch, err = d.inStreamOrder(ctx, batch)
	if err != nil {
		return 0, err
	}
	n := len(batch)
	accounts, streams, types, at := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]time.Time, 0, n)
	idx := make([]int, 0, n)
	for i, e := range batch {
		if e.AccountID == "" {
			continue
		}
		accounts, streams, types, at = append(accounts, e.AccountID), append(streams, e.StreamID), append(types, e.Type), append(at, e.RecordedAt)
		idx = append(idx, i)
	}
	if len(accounts) == 0 {
		return 0, nil
	}
	// Outside the transaction: a query's portal in an open transaction
	// keeps its snapshot, and the backend's xmin, until the next statement,
	// and the requests that follow take a while. An xmin held like that on
	// every batch kept PostgreSQL from pruning the hot tables' dead rows and
	// made every tail read ten times dearer (measured: tail.read active in
	// 72 of 100 samples instead of 6). The read needs no consistency with
	// the write: a delivery owed meanwhile is caught by the ready rule.
	rows, err := d.cfg.Store.Pool().Query(ctx, matchSQL, accounts, streams, types, at)
	if err != nil {
		return 0, fmt.Errorf("match: %w", err)
	}
	var matches []match
	for rows.Next() {
		var i int
		v := &delivery{}
		var owed bool
		if err := rows.Scan(&i, &v.webhookID, &v.url, &v.secrets, &owed); err != nil {
			rows.Close()
			return 0, fmt.Errorf("match: %w", err)
		}
		v.event, v.attempt = batch[idx[i]], 1
		matches = append(matches, match{v: v, owed: owed})
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("match: %w", err)
	}
	if len(matches) == 0 {
		return 0, nil
	}

	// Each pair's events in version order (inStreamOrder made the batch
	// hold every stream's events in order; the sort puts them so).
	groups := map[pair][]match{}
	var order []pair
	for _, m := range matches {
		k := pair{m.v.webhookID, m.v.event.StreamID}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	b := &directBatch{decided: make(chan struct{})}
	pending := false
	defer func() {
		if !pending { // not written: the batch is sent again; handed-over answers are dropped
			b.committed = false
			close(b.decided)
		}
	}()
	now := d.cfg.Now()
	deadline := time.Now().Add(d.cfg.DirectBudget)
	// Per endpoint, up to its free share of Concurrency workers take its
	// pairs one at a time; an endpoint with no share free, an open
	// breaker or a recent slow answer, and a pair already owed, go the
	// retry path's way (the first of a pair ready unless one is owed).
	queues := map[string]*pairQueue{}
	var hooks []string
	for _, k := range order {
		g := groups[k]
		slices.SortFunc(g, func(a, b match) int { return cmp.Compare(a.v.event.Version, b.v.event.Version) })
		if d.cfg.DirectBudget > 0 && !g[0].owed && d.directOK(k.webhook, now) {
			q := queues[k.webhook]
			if q == nil {
				q = &pairQueue{}
				queues[k.webhook] = q
				hooks = append(hooks, k.webhook)
			}
			q.pairs = append(q.pairs, g)
			continue
		}
		for i, m := range g {
			b.owed = append(b.owed, owedRow{v: m.v, ready: i == 0 && !m.owed, next: now})
		}
	}
	var wg sync.WaitGroup
	for _, id := range hooks {
		q := queues[id]
		ep, n := d.reserve(id, len(q.pairs))
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.directWorker(ctx, b, ep, q, deadline)
			}()
		}
	}
	wg.Wait()
	for _, id := range hooks { // what no worker took: a full endpoint, the budget's end
		for g := queues[id].pop(); g != nil; g = queues[id].pop() {
			b.leave(g, true, d.cfg.Now())
		}
	}
	if d.cfg.Hooks.BeforeRecord != nil {
		d.cfg.Hooks.BeforeRecord(ctx)
	}
	if err := ctx.Err(); err != nil {
		return 0, err // stopping: nothing of the batch is written, it is sent again
	}
	if err := d.writeDirect(ctx, tx, b); err != nil {
		return 0, err
	}
	d.mu.Lock()
	d.pending = b
	d.mu.Unlock()
	pending = true
	return len(matches), nil
}

// pairQueue is one endpoint's pairs of a batch, for its direct workers.
type pairQueue struct {
	mu    sync.Mutex
	pairs [][]match
}

func (q *pairQueue) pop() []match {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.pairs) == 0 {
		return nil
	}
	g := q.pairs[0]
	q.pairs = q.pairs[1:]
	return g
}

// directOK says whether an endpoint's events may go directly now: its
// breaker is closed and it has not been slow lately.
func (d *Deliverer) directOK(id string, now time.Time) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.endpoints[id]
	return ep == nil || (ep.failures < d.cfg.BreakerThreshold && !now.Before(ep.openAt) && !now.Before(ep.slowUntil))
}

// reserve takes up to want of an endpoint's free request slots (its
// Concurrency, shared with the retry path's workers).
func (d *Deliverer) reserve(id string, want int) (*endpoint, int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep := d.endpoint(id)
	n := max(0, min(want, d.cfg.Concurrency-ep.inflight))
	ep.inflight += n
	return ep, n
}

// releaseSlot gives a request slot back: to a worker for the retry
// path's queue of the endpoint, when it has one waiting, else free.
func (d *Deliverer) releaseSlot(ctx context.Context, ep *endpoint) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(ep.queue) > 0 && ctx.Err() == nil {
		d.workers.Add(1)
		go func() {
			defer d.workers.Done()
			d.work(ctx, ep)
		}()
		return
	}
	ep.inflight--
}

// directWorker sends pairs from q while the budget lasts, holding one of
// the endpoint's slots; a request still out at the budget's end keeps the
// slot when it is handed over.
func (d *Deliverer) directWorker(ctx context.Context, b *directBatch, ep *endpoint, q *pairQueue, deadline time.Time) {
	for ctx.Err() == nil && time.Now().Before(deadline) && d.directOK(ep.id, d.cfg.Now()) {
		g := q.pop()
		if g == nil {
			break
		}
		if d.sendPair(ctx, b, ep, g, deadline) {
			return // handed over, with the slot
		}
	}
	d.releaseSlot(ctx, ep)
}

// sendPair sends one pair's events in order, until one fails or the
// budget ends, and notes in b what each left. It reports whether a
// request was handed over (it then keeps the caller's slot).
func (d *Deliverer) sendPair(ctx context.Context, b *directBatch, ep *endpoint, g []match, deadline time.Time) bool {
	for i, m := range g {
		if !time.Now().Before(deadline) {
			b.leave(g[i:], true, d.cfg.Now())
			return false
		}
		done := make(chan result, 1)
		go func() { done <- d.attempt(ctx, m.v) }()
		// A request not answered within slowAnswer is handed over at
		// once (the endpoint is slow); one still out at the budget's end
		// is handed over too (the batch had more to send than the budget).
		slowAt := time.Now().Add(d.slowAnswer())
		until := slowAt
		if deadline.Before(until) {
			until = deadline
		}
		timer := time.NewTimer(time.Until(until))
		select {
		case r := <-done:
			timer.Stop()
			if ctx.Err() != nil && r.err != nil {
				// Stopping: cut short by us. The batch will not commit
				// (its context is done); it is sent again after a restart.
				b.leave(g[i:], true, d.cfg.Now())
				return false
			}
			d.breaker(ep, r)
			b.mu.Lock()
			b.results = append(b.results, r)
			b.mu.Unlock()
			if !r.ok() && m.v.attempt <= len(d.cfg.Schedule) {
				// It will be retried: the pair's later events wait behind
				// it. (One exhausted at once, by an empty schedule, is
				// done with, and the next goes.)
				b.leave(g[i+1:], false, d.cfg.Now())
				return false
			}
		case <-timer.C:
			now := d.cfg.Now()
			m.v.claimedAt = now
			if !time.Now().Before(slowAt) {
				d.slow(ep, now)
			}
			b.mu.Lock()
			b.handed = append(b.handed, m.v)
			b.owed = append(b.owed, owedRow{v: m.v, attempt: m.v.attempt - 1, ready: true, next: now.Add(d.cfg.Lease)})
			b.mu.Unlock()
			d.handing.Add(1)
			go d.handOver(ctx, b, ep, done)
			b.leave(g[i+1:], false, now)
			return true
		}
	}
	return false
}

// leave owes the rest of a pair's events: the first ready when nothing
// before it is left owed (headless), the others behind it.
func (b *directBatch) leave(rest []match, headless bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, m := range rest {
		b.owed = append(b.owed, owedRow{v: m.v, ready: headless && i == 0, next: now})
	}
}

// handOver waits for a handed-over request's answer, frees its slot,
// and passes the answer to the recorders once the batch that owes its
// delivery has committed; it drops it when the batch did not commit (it
// is sent again with the batch) or the deliverer stops (the claim is
// released, or left to its lease).
func (d *Deliverer) handOver(ctx context.Context, b *directBatch, ep *endpoint, done <-chan result) {
	defer d.handing.Done()
	r := <-done
	if ctx.Err() == nil || r.err == nil {
		d.breaker(ep, r)
	}
	d.releaseSlot(ctx, ep)
	<-b.decided
	if !b.committed || (ctx.Err() != nil && (r.err != nil || d.cfg.Hooks.Abandon)) {
		return
	}
	d.results <- r
}

// decide settles the batch sent before: committed, or not (a newer batch
// began, or the deliverer stops). The handed-over deliveries of a
// committed batch are held by this process from now on.
func (d *Deliverer) decide(committed bool) {
	d.mu.Lock()
	b := d.pending
	d.pending = nil
	if b != nil && committed {
		for _, v := range b.handed {
			d.claimed[v.key()] = v.claimedAt
		}
	}
	d.mu.Unlock()
	if b == nil {
		return
	}
	b.committed = committed
	close(b.decided)
}

// writeDirect writes the batch's attempts and what it leaves owed, with
// the endpoints' failing_since; it logs each attempt and counts it.
func (d *Deliverer) writeDirect(ctx context.Context, tx *eventstore.Tx, b *directBatch) error {
	a := newAttemptRows(len(b.results))
	for i := range b.results {
		r := &b.results[i]
		outcome, next := d.classify(r)
		a.add(r, outcome, next)
		if next != nil {
			b.owed = append(b.owed, owedRow{v: r.v, attempt: r.v.attempt, ready: true, next: *next})
		}
	}
	n := len(b.owed)
	hooks, streams, types := make([]string, n), make([]string, n), make([]string, n)
	positions, ids, attempts := make([]int64, n), make([]uuid.UUID, n), make([]int32, n)
	ready, next := make([]bool, n), make([]time.Time, n)
	wait := map[pair]bool{}
	for i, o := range b.owed {
		hooks[i], streams[i], types[i] = o.v.webhookID, o.v.event.StreamID, o.v.event.Type
		positions[i], ids[i], attempts[i] = o.v.event.Position, o.v.event.ID, int32(o.attempt)
		ready[i], next[i] = o.ready, o.next
		if k := (pair{o.v.webhookID, o.v.event.StreamID}); !o.ready && !wait[k] {
			wait[k] = true
			d.waiting = append(d.waiting, [2]string{k.webhook, k.stream})
		}
	}
	failIDs, failAt := a.failing()
	rows, err := tx.Query(ctx, directSQL, a.hooks, a.ids, a.types, a.streams, a.attempts, a.statuses, a.errs, a.durations,
		a.excerpts, a.at, a.next, a.outcomes, hooks, streams, positions, ids, types, attempts, ready, next, a.healthy, failIDs, failAt)
	if err != nil {
		return fmt.Errorf("record direct attempts: %w", err)
	}
	failing := map[string]time.Time{}
	for rows.Next() {
		var id string
		var since time.Time
		if err := rows.Scan(&id, &since); err != nil {
			rows.Close()
			return fmt.Errorf("record direct attempts: %w", err)
		}
		failing[id] = since
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("record direct attempts: %w", err)
	}
	b.mu.Lock()
	b.failing, b.gone = failing, a.gone
	b.mu.Unlock()
	d.metrics.owed.Add(float64(n))
	return nil
}

// attemptRows are a batch of attempts as recordSQL's and directSQL's
// arrays, with what the endpoints' health needs.
type attemptRows struct {
	hooks, streams, types, excerpts, outcomes []string
	errs                                      []*string
	positions                                 []int64
	ids                                       []uuid.UUID
	attempts, durations                       []int32
	statuses                                  []*int32
	at                                        []time.Time
	next                                      []*time.Time
	healthy, gone                             []string
	firstFail                                 map[string]time.Time
}

func newAttemptRows(n int) *attemptRows {
	return &attemptRows{hooks: make([]string, 0, n), streams: make([]string, 0, n), types: make([]string, 0, n),
		excerpts: make([]string, 0, n), outcomes: make([]string, 0, n), errs: make([]*string, 0, n),
		positions: make([]int64, 0, n), ids: make([]uuid.UUID, 0, n), attempts: make([]int32, 0, n),
		durations: make([]int32, 0, n), statuses: make([]*int32, 0, n), at: make([]time.Time, 0, n),
		next: make([]*time.Time, 0, n), firstFail: map[string]time.Time{}}
}

// add appends one attempt, logs it and counts it.
func (a *attemptRows) add(r *result, outcome string, next *time.Time) {
	v := r.v
	a.hooks, a.streams, a.types = append(a.hooks, v.webhookID), append(a.streams, v.event.StreamID), append(a.types, v.event.Type)
	a.positions, a.ids = append(a.positions, v.event.Position), append(a.ids, v.event.ID)
	a.attempts, a.durations = append(a.attempts, int32(v.attempt)), append(a.durations, int32(r.duration.Milliseconds()))
	a.at, a.excerpts, a.outcomes, a.next = append(a.at, r.at), append(a.excerpts, r.excerpt), append(a.outcomes, outcome), append(a.next, next)
	var status *int32
	if r.status != 0 {
		s := int32(r.status)
		status = &s
	}
	a.statuses = append(a.statuses, status)
	var e *string
	if s := describe(r); s != "" && r.err != nil {
		e = &s
	}
	a.errs = append(a.errs, e)
	if outcome == webhooks.OutcomeSucceeded {
		a.healthy = append(a.healthy, v.webhookID)
		return
	}
	if f, ok := a.firstFail[v.webhookID]; !ok || r.at.Before(f) {
		a.firstFail[v.webhookID] = r.at
	}
	if r.status == 410 {
		a.gone = append(a.gone, v.webhookID)
	}
}

// failing are the endpoints whose attempts here all failed, with the
// first failure's time: a success in the batch ends a run of failures.
func (a *attemptRows) failing() ([]string, []time.Time) {
	var ids []string
	var at []time.Time
	for id, t := range a.firstFail {
		if !slices.Contains(a.healthy, id) {
			ids, at = append(ids, id), append(at, t)
		}
	}
	return ids, at
}

// classify is an attempt's outcome, its next attempt's time when it will
// be retried, and the metrics and log line of it.
func (d *Deliverer) classify(r *result) (string, *time.Time) {
	v := r.v
	var outcome string
	var next *time.Time
	switch {
	case r.ok():
		outcome = webhooks.OutcomeSucceeded
		d.metrics.lag.Observe(r.received.Sub(v.event.RecordedAt).Seconds())
	case v.attempt > len(d.cfg.Schedule):
		outcome = webhooks.OutcomeExhausted
	default:
		outcome = webhooks.OutcomeFailed
		t := r.at.Add(max(d.cfg.Schedule[v.attempt-1], r.retryAfter))
		next = &t
	}
	d.metrics.deliveries.WithLabelValues(outcome).Inc()
	d.metrics.duration.Observe(r.duration.Seconds())
	d.logAttempt(r, outcome, next)
	return outcome, next
}

// afterDirect runs once the batch has committed: the handed-over answers
// may go to the recorders, gone and long-failing endpoints are disabled.
func (d *Deliverer) afterDirect() {
	d.mu.Lock()
	b := d.pending
	d.mu.Unlock()
	if b == nil {
		return
	}
	b.mu.Lock()
	gone, failing := b.gone, b.failing
	b.mu.Unlock()
	d.decide(true)
	d.disableAfter(gone, failing)
}
