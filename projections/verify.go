package projections

import (
	"context"
	"fmt"
	"reflect"
	"sort"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// Verification.
//
// Verify recomputes every read-model row from the events and reports each
// one that differs. It reads in one REPEATABLE READ snapshot, so rows,
// checkpoints and events agree with each other while the projector keeps
// running; a read-only transaction takes no transaction id and holds no
// tail reader back.
//
// What a row must equal: the fold of its stream's first `version` events
// through the domain aggregate (not through the projector's code path),
// shown with the same rendering. And version must be at least the number
// of the stream's events at or below the projection's checkpoint: a row
// may be ahead of its checkpoint (the projector reads skipped versions
// from the store, see versions.go), never behind it. Order counts must
// equal the count of the order's message rows by state; charged and
// refunded the sums of the money events at or below the checkpoint;
// provider statistics the sums over every folded message event.
// StartedAt is not checked: it needs the first attempt's time, which a
// message row does not keep.

// Difference is one read-model row that does not match the events.
type Difference struct {
	Projection string
	Table      string
	Key        string
	Detail     string
}

func (d Difference) String() string {
	return fmt.Sprintf("%s %s %s: %s", d.Projection, d.Table, d.Key, d.Detail)
}

// VerifyReport summarises a verification.
type VerifyReport struct {
	Rows        int
	Differences []Difference
}

const verifyChunk = 1000

const (
	verifyMessagesSQL = `SELECT ` + messageColumns + ` FROM read_messages WHERE message_id > $1 ORDER BY message_id LIMIT $2`
	verifyOrdersSQL   = `SELECT ` + orderColumns + ` FROM read_orders WHERE order_id > $1 ORDER BY order_id LIMIT $2`
	verifyAccountsSQL = `SELECT ` + accountColumns + ` FROM read_accounts ORDER BY account_id`

	// Streams with no row, whose first event the projection has passed.
	verifyMissingSQL = `SELECT s.stream_id FROM streams s
JOIN events e ON e.stream_id = s.stream_id AND e.stream_version = 1
WHERE s.stream_id LIKE $1 || '-%' AND (e.xid, e.global_position) <= ($2::xid8, $3::bigint)
  AND NOT EXISTS (SELECT 1 FROM read_messages m WHERE $1 = 'message' AND m.message_id = substr(s.stream_id, 9))
  AND NOT EXISTS (SELECT 1 FROM read_orders o WHERE $1 = 'order' AND o.order_id = substr(s.stream_id, 7) AND o.version > 0)
  AND NOT EXISTS (SELECT 1 FROM read_accounts a WHERE $1 = 'account' AND a.account_id = substr(s.stream_id, 9))
ORDER BY 1 LIMIT 1000`

	// Order counts against the message rows, in one pass over both.
	verifyCountsSQL = `SELECT coalesce(o.order_id, m.order_id),
    ARRAY[coalesce(o.count_scheduled, 0), coalesce(o.count_accepted, 0), coalesce(o.count_queued, 0), coalesce(o.count_routed, 0),
          coalesce(o.count_submitted, 0), coalesce(o.count_delivered, 0), coalesce(o.count_failed, 0), coalesce(o.count_canceled, 0),
          coalesce(o.count_expired, 0)],
    ARRAY[coalesce(m.scheduled, 0), coalesce(m.accepted, 0), coalesce(m.queued, 0), coalesce(m.routed, 0),
          coalesce(m.submitted, 0), coalesce(m.delivered, 0), coalesce(m.failed, 0), coalesce(m.canceled, 0),
          coalesce(m.expired, 0)]
FROM read_orders o
FULL JOIN (SELECT order_id,
        count(*) FILTER (WHERE state = 'accepted') AS accepted, count(*) FILTER (WHERE state = 'queued') AS queued,
        count(*) FILTER (WHERE state = 'routed') AS routed, count(*) FILTER (WHERE state = 'submitted') AS submitted,
        count(*) FILTER (WHERE state = 'delivered') AS delivered, count(*) FILTER (WHERE state = 'failed') AS failed,
        count(*) FILTER (WHERE state = 'failed' AND failure->>'code' = 'expired') AS expired,
        count(*) FILTER (WHERE state = 'scheduled') AS scheduled, count(*) FILTER (WHERE state = 'canceled') AS canceled
    FROM read_messages GROUP BY order_id) m USING (order_id)
WHERE (coalesce(o.count_scheduled, 0), coalesce(o.count_accepted, 0), coalesce(o.count_queued, 0), coalesce(o.count_routed, 0),
       coalesce(o.count_submitted, 0), coalesce(o.count_delivered, 0), coalesce(o.count_failed, 0), coalesce(o.count_canceled, 0),
       coalesce(o.count_expired, 0))
   IS DISTINCT FROM
      (coalesce(m.scheduled, 0), coalesce(m.accepted, 0), coalesce(m.queued, 0), coalesce(m.routed, 0),
       coalesce(m.submitted, 0), coalesce(m.delivered, 0), coalesce(m.failed, 0), coalesce(m.canceled, 0),
       coalesce(m.expired, 0))
ORDER BY 1 LIMIT 1000`

	// Charged and refunded against the money events the projection has passed.
	verifyMoneySQL = `SELECT coalesce(o.order_id, m.order_id), coalesce(o.charged_micros, 0), coalesce(o.refunded_micros, 0),
    coalesce(m.charged, 0), coalesce(m.refunded, 0)
FROM read_orders o
FULL JOIN (SELECT data->>'order_id' AS order_id,
        coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceCharged'), 0) AS charged,
        coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReleased'), 0) AS refunded
    FROM events WHERE type IN ('BalanceCharged', 'BalanceReleased') AND (xid, global_position) <= ($1::xid8, $2::bigint)
    GROUP BY 1) m USING (order_id)
WHERE (coalesce(o.charged_micros, 0), coalesce(o.refunded_micros, 0)) IS DISTINCT FROM (coalesce(m.charged, 0), coalesce(m.refunded, 0))
ORDER BY 1 LIMIT 1000`

	verifyStatsSQL    = `SELECT hour, provider, submitted, delivered, failed, retried, submit_ms_sum, submit_ms_count, submit_ms_buckets, deliver_ms_sum, deliver_ms_count, deliver_ms_buckets FROM read_provider_stats`
	verifyFailuresSQL = `SELECT hour, provider, code, stage, permanent, count FROM read_provider_failures`
)

// Verify checks every read model against the events.
func Verify(ctx context.Context, pool *pgxpool.Pool, progress func(table string, rows int)) (VerifyReport, error) {
	tx, err := pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return VerifyReport{}, err
	}
	defer func() { _ = tx.Rollback(context.WithoutCancel(ctx)) }()
	v := &verifier{tx: tx, progress: progress, stats: newStatsDelta()}
	for _, step := range []func(context.Context) error{v.messages, v.orders, v.providerStats, v.accounts} {
		if err := step(ctx); err != nil {
			return v.rep, fmt.Errorf("verify projections: %w", err)
		}
	}
	return v.rep, nil
}

type verifier struct {
	tx       pgx.Tx
	progress func(string, int)
	rep      VerifyReport
	stats    *statsDelta
}

func (v *verifier) diff(projection, table, key, format string, args ...any) {
	v.rep.Differences = append(v.rep.Differences, Difference{Projection: projection, Table: table, Key: key,
		Detail: fmt.Sprintf(format, args...)})
}

// checkpointOf reads a projection's checkpoint in the snapshot.
func (v *verifier) checkpointOf(ctx context.Context, p Projection) (eventstore.Cursor, error) {
	return eventstore.Checkpoint(ctx, v.tx, p.Checkpoint())
}

// passed counts the events of evs at or below the checkpoint.
func passed(evs []eventstore.RecordedEvent, cp eventstore.Cursor) int {
	n := 0
	for _, e := range evs {
		if !cp.Less(e.Cursor()) {
			n++
		}
	}
	return n
}

func (v *verifier) messages(ctx context.Context) error {
	p := messagesProjection()
	cp, err := v.checkpointOf(ctx, p)
	if err != nil {
		return err
	}
	after := ""
	for {
		rows, err := v.tx.Query(ctx, verifyMessagesSQL, after, verifyChunk)
		if err != nil {
			return err
		}
		chunk, err := pgx.CollectRows(rows, scanMessage)
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			break
		}
		streams := make([]string, len(chunk))
		for i, m := range chunk {
			streams[i] = domain.MessageStream(m.ID)
		}
		evs, err := eventstore.ReadStreams(ctx, v.tx, streams)
		if err != nil {
			return err
		}
		for i := range chunk {
			got := &chunk[i]
			v.message(p.Name, got, evs[domain.MessageStream(got.ID)], cp)
		}
		v.rep.Rows += len(chunk)
		after = chunk[len(chunk)-1].ID
		if v.progress != nil {
			v.progress("read_messages", v.rep.Rows)
		}
	}
	return v.missing(ctx, p.Name, "read_messages", domain.KindMessage, cp)
}

func (v *verifier) message(projection string, got *Message, evs []eventstore.RecordedEvent, cp eventstore.Cursor) {
	if got.Version > len(evs) {
		v.diff(projection, "read_messages", got.ID, "row folded version %d, the stream has %d events", got.Version, len(evs))
		return
	}
	if n := passed(evs, cp); got.Version < n {
		v.diff(projection, "read_messages", got.ID, "row is at version %d, the checkpoint has passed version %d", got.Version, n)
	}
	var agg domain.Message
	for _, e := range evs[:got.Version] {
		prev := agg
		if ev, err := foldMessageEvent(&agg, e); err == nil {
			v.stats.observe(&prev, ev)
		}
	}
	want := messageOf(&agg)
	for _, d := range fieldDiffs(want, *got) {
		v.diff(projection, "read_messages", got.ID, "%s", d)
	}
}

func (v *verifier) missing(ctx context.Context, projection, table, kind string, cp eventstore.Cursor) error {
	rows, err := v.tx.Query(ctx, verifyMissingSQL, kind, cp.XID, cp.Position)
	if err != nil {
		return err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return err
	}
	for _, s := range ids {
		_, id, _ := domain.SplitStream(s)
		v.diff(projection, table, id, "no row, though the checkpoint has passed the stream's first event")
	}
	return nil
}

func (v *verifier) orders(ctx context.Context) error {
	p := messagesProjection()
	cp, err := v.checkpointOf(ctx, p)
	if err != nil {
		return err
	}
	after, n := "", 0
	for {
		rows, err := v.tx.Query(ctx, verifyOrdersSQL, after, verifyChunk)
		if err != nil {
			return err
		}
		chunk, err := pgx.CollectRows(rows, scanOrder)
		if err != nil {
			return err
		}
		if len(chunk) == 0 {
			break
		}
		streams := make([]string, len(chunk))
		for i, o := range chunk {
			streams[i] = domain.OrderStream(o.ID)
		}
		evs, err := eventstore.ReadStreams(ctx, v.tx, streams)
		if err != nil {
			return err
		}
		for i := range chunk {
			got := &chunk[i]
			stream := evs[domain.OrderStream(got.ID)]
			if got.Version > len(stream) {
				v.diff(p.Name, "read_orders", got.ID, "row folded version %d, the stream has %d events", got.Version, len(stream))
				continue
			}
			if k := passed(stream, cp); got.Version < k {
				v.diff(p.Name, "read_orders", got.ID, "row is at version %d, the checkpoint has passed version %d", got.Version, k)
			}
			var agg domain.Order
			for _, e := range stream[:got.Version] {
				if ev, err := e.Decode(); err == nil {
					_ = agg.Apply(ev)
				}
			}
			want := Order{ID: got.ID}
			if agg.ID != "" {
				want.setFrom(&agg)
			}
			// Counts, money and StartedAt come from other streams: checked below.
			want.Counts, want.Charged, want.Refunded, want.StartedAt = got.Counts, got.Charged, got.Refunded, got.StartedAt
			want.Version = got.Version
			for _, d := range fieldDiffs(want, *got) {
				v.diff(p.Name, "read_orders", got.ID, "%s", d)
			}
		}
		n += len(chunk)
		v.rep.Rows += len(chunk)
		after = chunk[len(chunk)-1].ID
		if v.progress != nil {
			v.progress("read_orders", n)
		}
	}
	if err := v.missing(ctx, p.Name, "read_orders", domain.KindOrder, cp); err != nil {
		return err
	}
	rows, err := v.tx.Query(ctx, verifyCountsSQL)
	if err != nil {
		return err
	}
	type counts struct {
		id        string
		got, want []int64
	}
	bad, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (counts, error) {
		var c counts
		return c, r.Scan(&c.id, &c.got, &c.want)
	})
	if err != nil {
		return err
	}
	for _, c := range bad {
		v.diff(p.Name, "read_orders", c.id, "counts (scheduled, accepted, queued, routed, submitted, delivered, failed, canceled, expired) are %v, its message rows say %v", c.got, c.want)
	}
	rows, err = v.tx.Query(ctx, verifyMoneySQL, cp.XID, cp.Position)
	if err != nil {
		return err
	}
	type money struct {
		id                                   string
		charged, refunded, wantCh, wantRefnd int64
	}
	wrong, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (money, error) {
		var m money
		return m, r.Scan(&m.id, &m.charged, &m.refunded, &m.wantCh, &m.wantRefnd)
	})
	if err != nil {
		return err
	}
	if len(wrong) == 0 {
		return nil
	}
	// The projection's checkpoint is its oldest partition's: an order in a
	// partition that is further on has money the bound above leaves out.
	// Each such order is checked again up to its own partition's
	// checkpoint, which its row was committed with.
	parts, err := v.partitions(ctx, p.Checkpoint())
	if err != nil {
		return err
	}
	for _, m := range wrong {
		if len(parts) > 0 {
			own := parts[eventstore.PartitionOf(m.id, len(parts))]
			if err := v.tx.QueryRow(ctx, verifyOrderMoneySQL, m.id, own.XID, own.Position).Scan(&m.wantCh, &m.wantRefnd); err != nil {
				return err
			}
			if m.charged == m.wantCh && m.refunded == m.wantRefnd {
				continue
			}
		}
		v.diff(p.Name, "read_orders", m.id, "charged/refunded %d/%d, the money events say %d/%d", m.charged, m.refunded, m.wantCh, m.wantRefnd)
	}
	return nil
}

// verifyOrderMoneySQL is verifyMoneySQL's sums for one order, up to a cursor.
const verifyOrderMoneySQL = `SELECT
    coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceCharged'), 0),
    coalesce(sum((data->'amount'->>'amount_micros')::bigint) FILTER (WHERE type = 'BalanceReleased'), 0)
FROM events WHERE type IN ('BalanceCharged', 'BalanceReleased') AND data->>'order_id' = $1
    AND (xid, global_position) <= ($2::xid8, $3::bigint)`

// partitions returns a partitioned consumer's checkpoint per partition, in
// partition order, as of the snapshot (none for an unpartitioned one).
func (v *verifier) partitions(ctx context.Context, consumer string) ([]eventstore.Cursor, error) {
	rows, err := v.tx.Query(ctx, `SELECT xid, position FROM consumer_partitions WHERE consumer = $1 ORDER BY partition`, consumer)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (eventstore.Cursor, error) {
		var c eventstore.Cursor
		return c, r.Scan(&c.XID, &c.Position)
	})
}

// providerStats compares the provider statistics with the sums the message pass
// computed from the folded events.
func (v *verifier) providerStats(ctx context.Context) error {
	const projection = "messages"
	rows, err := v.tx.Query(ctx, verifyStatsSQL)
	if err != nil {
		return err
	}
	got := map[providerHour]*providerCounts{}
	for rows.Next() {
		var k providerHour
		c := &providerCounts{}
		var sb, db []int64
		if err := rows.Scan(&k.hour, &k.provider, &c.submitted, &c.delivered, &c.failed, &c.retried,
			&c.submit.Sum, &c.submit.Count, &sb, &c.deliver.Sum, &c.deliver.Count, &db); err != nil {
			rows.Close()
			return err
		}
		k.hour = k.hour.UTC()
		copy(c.submit.Buckets[:], sb)
		copy(c.deliver.Buckets[:], db)
		got[k] = c
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range unionKeys(got, v.stats.counts) {
		g, w := got[k], v.stats.counts[k]
		if g == nil {
			g = &providerCounts{}
		}
		if w == nil {
			w = &providerCounts{}
		}
		if !reflect.DeepEqual(g, w) {
			v.diff(projection, "read_provider_stats", k.provider+"@"+k.hour.Format("2006-01-02T15Z"),
				"row is %+v, the events say %+v", *g, *w)
		}
	}
	rows, err = v.tx.Query(ctx, verifyFailuresSQL)
	if err != nil {
		return err
	}
	gotF := map[failureKey]int64{}
	for rows.Next() {
		var k failureKey
		var n int64
		if err := rows.Scan(&k.hour, &k.provider, &k.code, &k.stage, &k.permanent, &n); err != nil {
			rows.Close()
			return err
		}
		k.hour = k.hour.UTC()
		gotF[k] = n
	}
	if err := rows.Err(); err != nil {
		return err
	}
	for _, k := range unionKeys(gotF, v.stats.failures) {
		if gotF[k] != v.stats.failures[k] {
			v.diff(projection, "read_provider_failures", fmt.Sprintf("%s@%s %s/%s permanent=%t", k.provider,
				k.hour.Format("2006-01-02T15Z"), k.code, k.stage, k.permanent), "count is %d, the events say %d", gotF[k], v.stats.failures[k])
		}
	}
	v.rep.Rows += len(got) + len(gotF)
	return nil
}

func (v *verifier) accounts(ctx context.Context) error {
	p := accountsProjection()
	cp, err := v.checkpointOf(ctx, p)
	if err != nil {
		return err
	}
	rows, err := v.tx.Query(ctx, verifyAccountsSQL)
	if err != nil {
		return err
	}
	all, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return err
	}
	for i := range all {
		got := &all[i]
		// One stream at a time: an account's stream grows with every order.
		evs, err := eventstore.ReadStream(ctx, v.tx, domain.AccountStream(got.ID), 1)
		if err != nil {
			return err
		}
		if got.Version > len(evs) {
			v.diff(p.Name, "read_accounts", got.ID, "row folded version %d, the stream has %d events", got.Version, len(evs))
			continue
		}
		if k := passed(evs, cp); got.Version < k {
			v.diff(p.Name, "read_accounts", got.ID, "row is at version %d, the checkpoint has passed version %d", got.Version, k)
		}
		want := Account{}
		var agg domain.Account
		for _, e := range evs[:got.Version] {
			prev, row := agg, want
			ev, err := e.Decode()
			if err == nil {
				err = foldAccount(&agg, &want, ev)
			}
			if err != nil {
				agg, want = prev, row
				agg.Version = e.Version
			}
		}
		want.setFrom(&agg)
		for _, d := range fieldDiffs(want, *got) {
			v.diff(p.Name, "read_accounts", got.ID, "%s", d)
		}
		v.rep.Rows++
		if v.progress != nil && v.rep.Rows%1000 == 0 {
			v.progress("read_accounts", i+1)
		}
	}
	return v.missing(ctx, p.Name, "read_accounts", domain.KindAccount, cp)
}

// fieldDiffs lists the fields in which two values of one struct type
// differ, as "Field: events say X, row has Y".
func fieldDiffs(want, got any) []string {
	w, g := reflect.ValueOf(want), reflect.ValueOf(got)
	var out []string
	for i := range w.NumField() {
		a, b := fmt.Sprintf("%+v", w.Field(i)), fmt.Sprintf("%+v", g.Field(i))
		if w.Field(i).Kind() == reflect.Pointer {
			a, b = derefString(w.Field(i)), derefString(g.Field(i))
		}
		if a != b {
			out = append(out, fmt.Sprintf("%s: events say %s, row has %s", w.Type().Field(i).Name, a, b))
		}
	}
	return out
}

func derefString(v reflect.Value) string {
	if v.IsNil() {
		return "<nil>"
	}
	return fmt.Sprintf("%+v", v.Elem())
}

func unionKeys[K comparable, A, B any](a map[K]A, b map[K]B) []K {
	var out []K
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Slice(out, func(i, j int) bool { return fmt.Sprint(out[i]) < fmt.Sprint(out[j]) })
	return out
}
