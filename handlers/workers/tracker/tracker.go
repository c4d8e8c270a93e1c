// Package tracker follows messages to their final states and settles
// orders: a delivered message's reservation becomes a charge, a failed
// or canceled message's price is released back to the account (refund), and when every
// message of an order is final the order gets OrderCompleted with its
// counts.
//
// It is a checkpointed consumer of the event tail: the account events it
// appends, its order_progress rows and its checkpoint commit together, so
// each message is settled exactly once whatever crashes or restarts.
package tracker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// Config configures the Tracker.
type Config struct {
	Store      *eventstore.Store
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	BatchSize  int // default 1,000
}

// Tracker settles final messages and completes orders.
type Tracker struct {
	cfg       Config
	log       *slog.Logger
	completed prometheus.Counter
	refunded  prometheus.Counter
}

// New returns a Tracker, or an error naming what cfg lacks.
func New(cfg Config) (*Tracker, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("tracker: Config.Store is required")
	case cfg.BatchSize < 0:
		return nil, errors.New("tracker: Config.BatchSize must not be negative")
	}
	if cfg.Now == nil { // a func is not comparable, so not cmp.Or's
		cfg.Now = time.Now
	}
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.BatchSize = cmp.Or(cfg.BatchSize, 1000)
	t := &Tracker{cfg: cfg, log: cfg.Logger.With("role", "tracker"),
		completed: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_orders_completed_total", Help: "Orders completed."}),
		refunded:  prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_messages_refunded_total", Help: "Failed or canceled messages whose price was released."}),
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(t.completed, t.refunded)
	}
	return t, nil
}

// Run follows the tail until ctx ends.
func (t *Tracker) Run(ctx context.Context) error {
	return t.cfg.Store.Run(ctx, eventstore.Consumer{
		Name: "tracker", BatchSize: t.cfg.BatchSize, Logger: t.log, Handle: t.apply,
		// An order's progress row adds up its messages' final events: one
		// partition settles an order, so no two processes race on its row.
		PartitionKey: eventstore.ByOrder,
		Filter:       eventstore.Filter{Types: domain.TypesOf(domain.MessageDelivered{}, domain.MessageFailed{}, domain.MessageCanceled{}), Sparse: true},
	})
}

// settlement is what one batch settles for one order.
type settlement struct {
	order, account              string
	delivered, failed, canceled []string
	expired                     int
	charged, refunded           int64
	// canceledRefund is the part of refunded that canceled messages get
	// back, released in an event of its own (its reason says why).
	canceledRefund int64
	currency       string
}

const (
	messagePricesSQL = `SELECT stream_id, (data->'price'->>'amount_micros')::bigint, data->'price'->>'currency'
FROM events WHERE stream_id = ANY($1::text[]) AND stream_version = 1`
	ensureProgressSQL = `INSERT INTO order_progress (order_id, account_id, message_count, currency)
SELECT data->>'order_id', data->>'account_id', (data->>'message_count')::int, data->'price'->>'currency'
FROM events WHERE stream_id = ANY($1::text[]) AND stream_version = 1
ON CONFLICT (order_id) DO NOTHING`
	advanceProgressSQL = `UPDATE order_progress p
SET delivered = p.delivered + u.delivered, failed = p.failed + u.failed, expired = p.expired + u.expired,
    canceled = p.canceled + u.canceled,
    charged_micros = p.charged_micros + u.charged, refunded_micros = p.refunded_micros + u.refunded
FROM unnest($1::text[], $2::int[], $3::int[], $4::int[], $5::bigint[], $6::bigint[], $7::int[])
     AS u(order_id, delivered, failed, expired, charged, refunded, canceled)
WHERE p.order_id = u.order_id
RETURNING p.order_id, p.message_count, p.delivered, p.failed, p.expired, p.canceled, p.charged_micros, p.refunded_micros, p.currency`
	completeProgressSQL = `UPDATE order_progress SET completed_at = $2 WHERE order_id = ANY($1::text[])`
)

// apply settles one batch of final message events.
func (t *Tracker) apply(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
	now := t.cfg.Now().UTC()
	byOrder := map[string]*settlement{}
	var msgStreams []string
	type final struct {
		id, order string
		failed    bool
		expired   bool
		canceled  bool
	}
	var finals []final
	for _, rec := range batch {
		ev, err := rec.Decode()
		if err != nil {
			return err
		}
		id, _ := domain.MessageIDOf(rec.StreamID) // the filter passes message events only
		f := final{id: id, order: rec.Metadata.CorrelationID}
		switch e := ev.(type) {
		case domain.MessageFailed:
			f.failed, f.expired = true, e.Failure.Code == domain.CodeExpired
		case domain.MessageCanceled:
			f.canceled = true
		}
		if byOrder[f.order] == nil {
			byOrder[f.order] = &settlement{order: f.order, account: rec.AccountID}
		}
		finals = append(finals, f)
		msgStreams = append(msgStreams, rec.StreamID)
	}
	prices, err := t.prices(ctx, tx, msgStreams)
	if err != nil {
		return err
	}
	for _, f := range finals {
		s, p := byOrder[f.order], prices[f.id]
		s.currency = p.Currency
		switch {
		case f.canceled:
			s.canceled, s.refunded, s.canceledRefund = append(s.canceled, f.id), s.refunded+p.AmountMicros, s.canceledRefund+p.AmountMicros
		case f.failed:
			s.failed, s.refunded = append(s.failed, f.id), s.refunded+p.AmountMicros
			if f.expired {
				s.expired++
			}
		default:
			s.delivered, s.charged = append(s.delivered, f.id), s.charged+p.AmountMicros
		}
	}
	orders := make([]*settlement, 0, len(byOrder))
	for _, s := range byOrder {
		orders = append(orders, s)
	}
	sort.Slice(orders, func(i, j int) bool { return orders[i].order < orders[j].order })
	// Settle last: the account's lock is shared with order acceptance, so
	// it is taken for the final statements of the transaction only.
	if err := t.advance(ctx, tx, orders, now); err != nil {
		return err
	}
	return t.settleAccounts(ctx, tx, orders, now)
}

func (t *Tracker) prices(ctx context.Context, tx *eventstore.Tx, streams []string) (map[string]domain.Money, error) {
	rows, err := tx.Query(ctx, messagePricesSQL, streams)
	if err != nil {
		return nil, fmt.Errorf("message prices: %w", err)
	}
	defer rows.Close()
	out := make(map[string]domain.Money, len(streams))
	for rows.Next() {
		var stream string
		var m domain.Money
		if err := rows.Scan(&stream, &m.AmountMicros, &m.Currency); err != nil {
			return nil, err
		}
		id, _ := domain.MessageIDOf(stream)
		out[id] = m
	}
	return out, rows.Err()
}

// settleAccounts appends, per account, a BalanceCharged for the delivered
// and a BalanceReleased for the failed and one for the canceled messages
// of each order.
func (t *Tracker) settleAccounts(ctx context.Context, tx *eventstore.Tx, orders []*settlement, now time.Time) error {
	byAccount := map[string][]*settlement{}
	var accountIDs []string
	for _, s := range orders {
		if byAccount[s.account] == nil {
			accountIDs = append(accountIDs, s.account)
		}
		byAccount[s.account] = append(byAccount[s.account], s)
	}
	sort.Strings(accountIDs) // lock accounts in one order: no deadlock with another settler
	var appends []eventstore.StreamAppend
	for _, id := range accountIDs {
		acct, err := accounts.LoadForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		version := acct.Version
		var evs []eventstore.EventData
		for _, s := range byAccount[id] {
			md := eventstore.Metadata{AccountID: id, CorrelationID: s.order, Actor: "tracker"}
			if s.charged > 0 {
				e, err := acct.Charge(s.order, domain.Money{AmountMicros: s.charged, Currency: acct.Currency}, s.delivered, now)
				if err != nil {
					return fmt.Errorf("charge order %s: %w", s.order, err)
				}
				if err := acct.Apply(e); err != nil {
					return err
				}
				evs = append(evs, eventstore.MustEvent(e, md))
			}
			for _, r := range []struct {
				amount int64
				ids    []string
				reason string
			}{{s.refunded - s.canceledRefund, s.failed, "messages failed"}, {s.canceledRefund, s.canceled, "messages canceled"}} {
				if len(r.ids) == 0 {
					continue
				}
				e, err := acct.Release(s.order, domain.Money{AmountMicros: r.amount, Currency: acct.Currency}, r.ids, r.reason, now)
				if err != nil {
					return fmt.Errorf("refund order %s: %w", s.order, err)
				}
				if err := acct.Apply(e); err != nil {
					return err
				}
				evs = append(evs, eventstore.MustEvent(e, md))
				t.refunded.Add(float64(len(r.ids)))
			}
		}
		if len(evs) > 0 {
			appends = append(appends, eventstore.StreamAppend{Stream: domain.AccountStream(id), Expected: eventstore.Exact(version), Events: evs})
		}
	}
	if len(appends) == 0 {
		return nil
	}
	_, err := tx.Append(ctx, appends...)
	return err
}

// advance counts the batch into order_progress and completes the orders
// whose every message is now final.
func (t *Tracker) advance(ctx context.Context, tx *eventstore.Tx, orders []*settlement, now time.Time) error {
	streams := make([]string, len(orders))
	ids := make([]string, len(orders))
	var del, fail, exp, canc []int32
	var charged, refunded []int64
	for i, s := range orders {
		streams[i], ids[i] = domain.OrderStream(s.order), s.order
		del, fail, exp = append(del, int32(len(s.delivered))), append(fail, int32(len(s.failed))), append(exp, int32(s.expired))
		canc = append(canc, int32(len(s.canceled)))
		charged, refunded = append(charged, s.charged), append(refunded, s.refunded)
	}
	if _, err := tx.Exec(ctx, ensureProgressSQL, streams); err != nil {
		return fmt.Errorf("order progress: %w", err)
	}
	rows, err := tx.Query(ctx, advanceProgressSQL, ids, del, fail, exp, charged, refunded, canc)
	if err != nil {
		return fmt.Errorf("order progress: %w", err)
	}
	type done struct {
		order             string
		counts            domain.OrderCounts
		charged, refunded int64
		currency          string
	}
	var complete []done
	for rows.Next() {
		var d done
		var total int
		if err := rows.Scan(&d.order, &total, &d.counts.Delivered, &d.counts.Failed, &d.counts.Expired, &d.counts.Canceled, &d.charged, &d.refunded, &d.currency); err != nil {
			rows.Close()
			return err
		}
		if d.counts.Delivered+d.counts.Failed+d.counts.Canceled == total {
			complete = append(complete, d)
		}
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if len(complete) == 0 {
		return nil
	}
	var appends []eventstore.StreamAppend
	var completedIDs []string
	for _, d := range complete {
		o := domain.Order{}
		recs, err := eventstore.ReadStream(ctx, tx, domain.OrderStream(d.order), 1)
		if err != nil {
			return err
		}
		evs, err := eventstore.DecodeAll(recs)
		if err != nil {
			return err
		}
		for _, e := range evs {
			if err := o.Apply(e); err != nil {
				return err
			}
		}
		ev, err := o.Complete(d.counts, domain.Money{AmountMicros: d.charged, Currency: d.currency},
			domain.Money{AmountMicros: d.refunded, Currency: d.currency}, now)
		if err != nil {
			return err
		}
		appends = append(appends, eventstore.StreamAppend{Stream: domain.OrderStream(d.order), Expected: eventstore.Exact(o.Version),
			Events: []eventstore.EventData{eventstore.MustEvent(ev, eventstore.FollowUp(recs, "tracker"))}})
		completedIDs = append(completedIDs, d.order)
	}
	if _, err := tx.Append(ctx, appends...); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, completeProgressSQL, completedIDs, now); err != nil {
		return err
	}
	t.completed.Add(float64(len(completedIDs)))
	return nil
}

// MaintainedTables are the tables the tracker wants eventstore.Maintainn// to look after: an order's progress row is updated for every message.
var MaintainedTables = []eventstore.Table{{Name: "order_progress", Every: time.Minute}}
