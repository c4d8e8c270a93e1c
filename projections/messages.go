package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// The messages projection keeps four tables: read_messages, read_orders,
// read_provider_stats and read_provider_failures. They are one projection
// because the last three are functions of the first one's transitions: an
// order's counts move when one of its messages changes state, and a
// provider's figures when a message is submitted, delivered or fails on
// it. Folding each message once and deriving the rest from that fold, in
// one transaction, keeps them consistent by construction.
func messagesProjection() Projection {
	return Projection{
		Name:   "messages",
		Tables: []string{"read_messages", "read_orders", "read_provider_stats", "read_provider_failures"},
		Types: domain.TypesOf(domain.MessageAccepted{}, domain.MessageQueued{}, domain.MessageRouted{},
			domain.MessageSubmitted{}, domain.MessageDelivered{}, domain.MessageFailed{}, domain.MessageRetried{}, domain.MessageCanceled{},
			domain.MessageRedriven{}, domain.OrderAccepted{}, domain.OrderCompleted{}, domain.BalanceCharged{}, domain.BalanceReleased{}),
		// An order's row folds its order's and its messages' events, in
		// tail order: they share a partition.
		PartitionKey: eventstore.ByOrder,
		apply:        applyMessages,
	}
}

const (
	loadMessagesSQL = `SELECT ` + messageColumns + ` FROM read_messages WHERE message_id = ANY($1::text[])`
	loadOrdersSQL   = `SELECT ` + orderColumns + ` FROM read_orders WHERE order_id = ANY($1::text[])`

	upsertMessagesSQL = `INSERT INTO read_messages (` + messageColumns + `)
SELECT message_id, account_id, order_id, idx, to_number, country, sender, encoding, segments,
    price_micros, currency, state, attempt, lifecycle_state, current_attempt, next_attempt, not_before,
    route_id, provider, route_reason, provider_message_id, failure::jsonb,
    accepted_at, queued_at, routed_at, submitted_at, delivered_at, failed_at, retried_at, expires_at, version, body,
    send_at, canceled_at, redrive_of, redriven_as
FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::text[], $6::text[], $7::text[], $8::text[], $9::int[],
    $10::bigint[], $11::text[], $12::text[], $13::int[], $14::text[], $15::int[], $16::int[], $17::timestamptz[],
    $18::text[], $19::text[], $20::text[], $21::text[], $22::text[],
    $23::timestamptz[], $24::timestamptz[], $25::timestamptz[], $26::timestamptz[], $27::timestamptz[],
    $28::timestamptz[], $29::timestamptz[], $30::timestamptz[], $31::int[], $32::text[], $33::timestamptz[], $34::timestamptz[],
    $35::text[], $36::text[])
  AS u(message_id, account_id, order_id, idx, to_number, country, sender, encoding, segments,
    price_micros, currency, state, attempt, lifecycle_state, current_attempt, next_attempt, not_before,
    route_id, provider, route_reason, provider_message_id, failure,
    accepted_at, queued_at, routed_at, submitted_at, delivered_at, failed_at, retried_at, expires_at, version, body,
    send_at, canceled_at, redrive_of, redriven_as)
ON CONFLICT (message_id) DO UPDATE SET
    state = excluded.state, attempt = excluded.attempt, lifecycle_state = excluded.lifecycle_state,
    current_attempt = excluded.current_attempt, next_attempt = excluded.next_attempt, not_before = excluded.not_before,
    route_id = excluded.route_id, provider = excluded.provider, route_reason = excluded.route_reason,
    provider_message_id = excluded.provider_message_id, failure = excluded.failure,
    queued_at = excluded.queued_at, routed_at = excluded.routed_at, submitted_at = excluded.submitted_at,
    delivered_at = excluded.delivered_at, failed_at = excluded.failed_at, retried_at = excluded.retried_at,
    canceled_at = excluded.canceled_at, redriven_as = excluded.redriven_as, version = excluded.version
WHERE read_messages.version < excluded.version`

	upsertOrdersSQL = `INSERT INTO read_orders (` + orderColumns + `)
SELECT * FROM unnest($1::text[], $2::text[], $3::int[], $4::bigint[], $5::text[], $6::int[],
    $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[],
    $11::int[], $12::int[], $13::int[], $14::int[], $15::int[], $16::int[], $17::int[],
    $18::bigint[], $19::bigint[], $20::int[], $21::jsonb[], $22::timestamptz[], $23::int[], $24::int[])
ON CONFLICT (order_id) DO UPDATE SET
    account_id = excluded.account_id, message_count = excluded.message_count, price_micros = excluded.price_micros,
    currency = excluded.currency, validity_seconds = excluded.validity_seconds, expires_at = excluded.expires_at,
    accepted_at = excluded.accepted_at, started_at = excluded.started_at, completed_at = excluded.completed_at,
    count_accepted = excluded.count_accepted, count_queued = excluded.count_queued, count_routed = excluded.count_routed,
    count_submitted = excluded.count_submitted, count_delivered = excluded.count_delivered,
    count_failed = excluded.count_failed, count_expired = excluded.count_expired,
    charged_micros = excluded.charged_micros, refunded_micros = excluded.refunded_micros, version = excluded.version,
    metadata = excluded.metadata, send_at = excluded.send_at, count_scheduled = excluded.count_scheduled,
    count_canceled = excluded.count_canceled`

	// Statistics are sums: a batch adds its deltas. Exactly-once comes from
	// the checkpoint written in the same transaction, and from deriving the
	// deltas only from events the message fold accepted.
	upsertProviderStatsSQL = `INSERT INTO read_provider_stats AS s (hour, provider, submitted, delivered, failed, retried,
    submit_ms_sum, submit_ms_count, submit_ms_buckets, deliver_ms_sum, deliver_ms_count, deliver_ms_buckets)
SELECT hour, provider, submitted, delivered, failed, retried,
    submit_ms_sum, submit_ms_count, submit_ms_buckets::bigint[], deliver_ms_sum, deliver_ms_count, deliver_ms_buckets::bigint[]
FROM unnest($1::timestamptz[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[],
    $7::bigint[], $8::bigint[], $9::text[], $10::bigint[], $11::bigint[], $12::text[])
  AS u(hour, provider, submitted, delivered, failed, retried,
    submit_ms_sum, submit_ms_count, submit_ms_buckets, deliver_ms_sum, deliver_ms_count, deliver_ms_buckets)
ON CONFLICT (hour, provider) DO UPDATE SET
    submitted = s.submitted + excluded.submitted, delivered = s.delivered + excluded.delivered,
    failed = s.failed + excluded.failed, retried = s.retried + excluded.retried,
    submit_ms_sum = s.submit_ms_sum + excluded.submit_ms_sum, submit_ms_count = s.submit_ms_count + excluded.submit_ms_count,
    submit_ms_buckets = (SELECT array_agg(a + b ORDER BY i) FROM unnest(s.submit_ms_buckets, excluded.submit_ms_buckets) WITH ORDINALITY AS t(a, b, i)),
    deliver_ms_sum = s.deliver_ms_sum + excluded.deliver_ms_sum, deliver_ms_count = s.deliver_ms_count + excluded.deliver_ms_count,
    deliver_ms_buckets = (SELECT array_agg(a + b ORDER BY i) FROM unnest(s.deliver_ms_buckets, excluded.deliver_ms_buckets) WITH ORDINALITY AS t(a, b, i))`

	upsertProviderFailuresSQL = `INSERT INTO read_provider_failures AS f (hour, provider, code, stage, permanent, count)
SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::bool[], $6::bigint[])
ON CONFLICT (hour, provider, code, stage, permanent) DO UPDATE SET count = f.count + excluded.count`
)

// messagesBatch is one batch's work in progress.
type messagesBatch struct {
	res      result
	changed  []Message
	orders   map[string]*Order
	orderIDs []string // in first-touched order, for deterministic writes
	stats    *statsDelta
}

func (b *messagesBatch) order(id string) *Order {
	o := b.orders[id]
	if o == nil {
		o = &Order{ID: id}
		b.orders[id] = o
		b.orderIDs = append(b.orderIDs, id)
	}
	return o
}

func applyMessages(ctx context.Context, tx pgx.Tx, batch []eventstore.RecordedEvent) (result, error) {
	b := &messagesBatch{orders: map[string]*Order{}, stats: newStatsDelta()}
	var messageEvents, orderEvents, moneyEvents []eventstore.RecordedEvent
	charged, released := domain.BalanceCharged{}.EventType(), domain.BalanceReleased{}.EventType()
	for _, e := range batch {
		kind, _, _ := domain.SplitStream(e.StreamID)
		switch {
		case kind == domain.KindMessage:
			messageEvents = append(messageEvents, e)
		case kind == domain.KindOrder:
			orderEvents = append(orderEvents, e)
		case e.Type == charged || e.Type == released:
			moneyEvents = append(moneyEvents, e)
		}
	}
	deltas, err := b.foldMessages(ctx, tx, messageEvents)
	if err != nil {
		return b.res, err
	}
	// Every order touched by this batch, loaded once.
	for _, e := range orderEvents {
		id, _ := domain.OrderIDOf(e.StreamID)
		b.order(id)
	}
	money := map[string][2]int64{} // order id → charged, refunded
	for _, e := range moneyEvents {
		orderID, amount, err := moneyOf(e)
		if err != nil {
			b.res.refuse(e, err)
			continue
		}
		m := money[orderID]
		if e.Type == charged {
			m[0] += amount
		} else {
			m[1] += amount
		}
		money[orderID] = m
		b.order(orderID)
	}
	for id := range deltas {
		b.order(id)
	}
	if err := b.loadOrders(ctx, tx); err != nil {
		return b.res, err
	}
	if err := b.foldOrders(ctx, tx, orderEvents); err != nil {
		return b.res, err
	}
	for id, d := range deltas {
		o := b.orders[id]
		for state, n := range d.counts {
			o.Counts.add(state, n)
		}
		o.Counts.Expired += d.expired
		if !d.started.IsZero() && (o.StartedAt.IsZero() || d.started.Before(o.StartedAt)) {
			o.StartedAt = stored(d.started)
		}
	}
	for id, m := range money {
		o := b.orders[id]
		o.Charged.AmountMicros += m[0]
		o.Refunded.AmountMicros += m[1]
	}
	return b.res, b.write(ctx, tx)
}

// orderDelta is what a batch's message transitions do to one order.
type orderDelta struct {
	counts  map[string]int
	expired int
	started time.Time
}

// foldMessages folds each message's events onto its row and returns the
// resulting moves between public states, per order.
func (b *messagesBatch) foldMessages(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) (map[string]*orderDelta, error) {
	if len(events) == 0 {
		return nil, nil
	}
	ids := make([]string, 0, len(events))
	seen := map[string]bool{}
	for _, e := range events {
		if id, _ := domain.MessageIDOf(e.StreamID); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	rows, err := tx.Query(ctx, loadMessagesSQL, ids)
	if err != nil {
		return nil, fmt.Errorf("load messages: %w", err)
	}
	loaded, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return nil, fmt.Errorf("load messages: %w", err)
	}
	current := make(map[string]*Message, len(loaded))
	for i := range loaded {
		current[domain.MessageStream(loaded[i].ID)] = &loaded[i]
	}
	streams, err := inVersionOrder(ctx, tx, events, func(s string) int {
		if m := current[s]; m != nil {
			return m.Version
		}
		return 0
	})
	if err != nil {
		return nil, err
	}
	deltas := map[string]*orderDelta{}
	for _, s := range streams {
		if len(s.events) == 0 {
			continue
		}
		var agg domain.Message
		if m := current[s.stream]; m != nil {
			agg = m.aggregate()
		}
		for _, e := range s.events {
			prev := agg
			ev, err := foldMessageEvent(&agg, e)
			if err != nil {
				b.res.refuse(e, err)
				continue
			}
			b.stats.observe(&prev, ev)
			from, to := prev.State.PublicState(), agg.State.PublicState()
			if from == to {
				continue
			}
			if agg.State.Final() {
				b.res.finish(&agg)
			}
			d := deltas[agg.OrderID]
			if d == nil {
				d = &orderDelta{counts: map[string]int{}}
				deltas[agg.OrderID] = d
			}
			d.counts[from]--
			d.counts[to]++
			if to == "failed" && agg.Failure != nil && agg.Failure.Code == domain.CodeExpired {
				d.expired++
			}
			if from == "accepted" || from == "scheduled" {
				if t := firstMove(&agg); d.started.IsZero() || t.Before(d.started) {
					d.started = t
				}
			}
		}
		if agg.ID == "" {
			continue // nothing folded that says which message this is
		}
		b.changed = append(b.changed, messageOf(&agg))
	}
	return deltas, nil
}

// firstMove is when a message left accepted (or scheduled): queued, or
// failed or canceled without ever being queued.
func firstMove(m *domain.Message) time.Time {
	switch {
	case !m.QueuedAt.IsZero():
		return m.QueuedAt
	case !m.FailedAt.IsZero():
		return m.FailedAt
	}
	return m.CanceledAt
}

func (b *messagesBatch) loadOrders(ctx context.Context, tx pgx.Tx) error {
	if len(b.orderIDs) == 0 {
		return nil
	}
	rows, err := tx.Query(ctx, loadOrdersSQL, b.orderIDs)
	if err != nil {
		return fmt.Errorf("load orders: %w", err)
	}
	loaded, err := pgx.CollectRows(rows, scanOrder)
	if err != nil {
		return fmt.Errorf("load orders: %w", err)
	}
	for _, o := range loaded {
		*b.orders[o.ID] = o
	}
	return nil
}

func (b *messagesBatch) foldOrders(ctx context.Context, tx pgx.Tx, events []eventstore.RecordedEvent) error {
	streams, err := inVersionOrder(ctx, tx, events, func(s string) int {
		id, _ := domain.OrderIDOf(s)
		return b.orders[id].Version
	})
	if err != nil {
		return err
	}
	for _, s := range streams {
		id, _ := domain.OrderIDOf(s.stream)
		o := b.orders[id]
		agg := o.aggregate()
		for _, e := range s.events {
			ev, err := e.Decode()
			if err == nil {
				err = agg.Apply(ev)
			}
			if err != nil {
				b.res.refuse(e, err)
				agg.Version = e.Version
			}
		}
		if agg.ID != "" {
			o.setFrom(&agg)
		} else {
			o.Version = agg.Version
		}
	}
	return nil
}

// moneyOf reads the order and amount of a BalanceCharged or BalanceReleased.
func moneyOf(e eventstore.RecordedEvent) (string, int64, error) {
	ev, err := e.Decode()
	if err != nil {
		return "", 0, err
	}
	switch m := ev.(type) {
	case domain.BalanceCharged:
		return m.OrderID, m.Amount.AmountMicros, nil
	case domain.BalanceReleased:
		return m.OrderID, m.Amount.AmountMicros, nil
	}
	return "", 0, fmt.Errorf("%s is not a money event of an order", e.Type)
}

// write sends every upsert of the batch in one round trip.
func (b *messagesBatch) write(ctx context.Context, tx pgx.Tx) error {
	pb := &pgx.Batch{}
	if len(b.changed) > 0 {
		pb.Queue(upsertMessagesSQL, messageArrays(b.changed)...)
	}
	if len(b.orderIDs) > 0 {
		orders := make([]*Order, len(b.orderIDs))
		for i, id := range b.orderIDs {
			orders[i] = b.orders[id]
		}
		pb.Queue(upsertOrdersSQL, orderArrays(orders)...)
	}
	if len(b.stats.counts) > 0 {
		pb.Queue(upsertProviderStatsSQL, providerStatsArrays(b.stats.counts)...)
	}
	if len(b.stats.failures) > 0 {
		pb.Queue(upsertProviderFailuresSQL, providerFailureArrays(b.stats.failures)...)
	}
	if pb.Len() == 0 {
		return nil
	}
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return fmt.Errorf("write read models: %w", err)
	}
	return nil
}

func messageArrays(ms []Message) []any {
	n := len(ms)
	var (
		id, account, order, to, country, sender, enc, currency, state, lifecycle = mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n), mk[string](n)
		idx, segments, attempt, cur, next, version                               = mk[int32](n), mk[int32](n), mk[int32](n), mk[int32](n), mk[int32](n), mk[int32](n)
		price                                                                    = mk[int64](n)
		routeID, provider, reason, pmid, failure                                 = mk[*string](n), mk[*string](n), mk[*string](n), mk[*string](n), mk[*string](n)
		notBefore, queued, routed, submitted, delivered, failed, retried         = mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n)
		accepted, expires                                                        = mk[time.Time](n), mk[time.Time](n)
		body                                                                     = mk[string](n)
		sendAt, canceled                                                         = mk[*time.Time](n), mk[*time.Time](n)
		redriveOf, redrivenAs                                                    = mk[*string](n), mk[*string](n)
	)
	for i := range ms {
		m := &ms[i]
		id[i], account[i], order[i], idx[i], to[i], country[i], sender[i] = m.ID, m.AccountID, m.OrderID, int32(m.Index), m.To, m.Country, m.From
		enc[i], segments[i], price[i], currency[i] = m.Encoding, int32(m.Segments), m.Price.AmountMicros, m.Price.Currency
		state[i], attempt[i], lifecycle[i] = m.State, int32(m.Attempt), string(m.lifecycle)
		cur[i], next[i], notBefore[i] = int32(m.currentAttempt), int32(m.nextAttempt), timeOrNil(m.notBefore)
		if m.Route != nil {
			routeID[i], provider[i], reason[i] = &m.Route.RouteID, &m.Route.Provider, &m.Route.Reason
		}
		pmid[i] = stringOrNil(m.ProviderMessageID)
		if m.Failure != nil {
			f, _ := json.Marshal(m.Failure) // a struct of strings and a bool
			failure[i] = stringOrNil(string(f))
		}
		accepted[i], queued[i], routed[i], submitted[i] = m.AcceptedAt, timeOrNil(m.QueuedAt), timeOrNil(m.RoutedAt), timeOrNil(m.SubmittedAt)
		delivered[i], failed[i], retried[i], expires[i] = timeOrNil(m.DeliveredAt), timeOrNil(m.FailedAt), timeOrNil(m.RetriedAt), m.ExpiresAt
		version[i], body[i] = int32(m.Version), m.Body
		sendAt[i], canceled[i] = timeOrNil(m.SendAt), timeOrNil(m.CanceledAt)
		redriveOf[i], redrivenAs[i] = stringOrNil(m.RedriveOf), stringOrNil(m.RedrivenAs)
	}
	return []any{id, account, order, idx, to, country, sender, enc, segments, price, currency, state, attempt, lifecycle,
		cur, next, notBefore, routeID, provider, reason, pmid, failure,
		accepted, queued, routed, submitted, delivered, failed, retried, expires, version, body, sendAt, canceled,
		redriveOf, redrivenAs}
}

func orderArrays(os []*Order) []any {
	n := len(os)
	id, account, currency := mk[string](n), mk[string](n), mk[string](n)
	count, validity, version := mk[int32](n), mk[int32](n), mk[int32](n)
	price, charged, refunded := mk[int64](n), mk[int64](n), mk[int64](n)
	expires, accepted, started, completed := mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n), mk[*time.Time](n)
	metadata := mk[*string](n)
	sendAt := mk[*time.Time](n)
	var counts [9][]int32
	for k := range counts {
		counts[k] = mk[int32](n)
	}
	for i, o := range os {
		id[i], account[i], count[i], price[i], currency[i], validity[i] = o.ID, o.AccountID, int32(o.MessageCount), o.Price.AmountMicros, o.Price.Currency, int32(o.ValiditySeconds)
		expires[i], accepted[i], started[i], completed[i] = timeOrNil(o.ExpiresAt), timeOrNil(o.AcceptedAt), timeOrNil(o.StartedAt), timeOrNil(o.CompletedAt)
		c := o.Counts
		for k, v := range []int{c.Accepted, c.Queued, c.Routed, c.Submitted, c.Delivered, c.Failed, c.Expired, c.Scheduled, c.Canceled} {
			counts[k][i] = int32(v)
		}
		charged[i], refunded[i], version[i] = o.Charged.AmountMicros, o.Refunded.AmountMicros, int32(o.Version)
		if o.Metadata != nil {
			metadata[i] = stringOrNil(string(o.Metadata))
		}
		sendAt[i] = timeOrNil(o.SendAt)
	}
	return []any{id, account, count, price, currency, validity, expires, accepted, started, completed,
		counts[0], counts[1], counts[2], counts[3], counts[4], counts[5], counts[6], charged, refunded, version, metadata,
		sendAt, counts[7], counts[8]}
}

func providerStatsArrays(m map[providerHour]*providerCounts) []any {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b providerHour) int {
		if c := a.hour.Compare(b.hour); c != 0 {
			return c
		}
		return strings.Compare(a.provider, b.provider)
	})
	n := len(keys)
	hour, provider, sb, db := mk[time.Time](n), mk[string](n), mk[string](n), mk[string](n)
	var nums [8][]int64
	for k := range nums {
		nums[k] = mk[int64](n)
	}
	for i, k := range keys {
		c := m[k]
		hour[i], provider[i], sb[i], db[i] = k.hour, k.provider, c.submit.pgArray(), c.deliver.pgArray()
		for j, v := range []int64{c.submitted, c.delivered, c.failed, c.retried, c.submit.Sum, c.submit.Count, c.deliver.Sum, c.deliver.Count} {
			nums[j][i] = v
		}
	}
	return []any{hour, provider, nums[0], nums[1], nums[2], nums[3], nums[4], nums[5], sb, nums[6], nums[7], db}
}

func providerFailureArrays(m map[failureKey]int64) []any {
	keys := slices.SortedFunc(maps.Keys(m), func(a, b failureKey) int {
		return strings.Compare(fmt.Sprint(a.hour.UnixNano(), a.provider, a.code, a.stage, a.permanent),
			fmt.Sprint(b.hour.UnixNano(), b.provider, b.code, b.stage, b.permanent))
	})
	n := len(keys)
	hour, provider, code, stage, permanent, count := mk[time.Time](n), mk[string](n), mk[string](n), mk[string](n), mk[bool](n), mk[int64](n)
	for i, k := range keys {
		hour[i], provider[i], code[i], stage[i], permanent[i], count[i] = k.hour, k.provider, k.code, k.stage, k.permanent, m[k]
	}
	return []any{hour, provider, code, stage, permanent, count}
}

func mk[T any](n int) []T { return make([]T, n) }
