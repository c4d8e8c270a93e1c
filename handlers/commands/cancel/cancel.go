// Package cancel calls messages back before they go out: one message, or
// every message of an order that no worker holds yet. Each cancel is a
// MessageCanceled event carrying the API key that asked and its reason.
//
// The store's expected-version append is the arbiter of a race with a
// dispatch worker: the cancel appends MessageCanceled at the version it
// read, the worker MessageRouted at the version it read, and only one of
// the two can commit. A cancel that loses reads the message again and
// finds it routed (too late: not cancelable) or still waiting (it tries
// again). A worker that loses reloads and drops the job of a canceled
// message, so a canceled message never reaches a provider.
//
// What follows a cancel is the other roles' business, from the tail: the
// scheduler deletes the message's row, the tracker refunds its price and
// completes the order once every message is final.
package cancel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// ErrNotFound: no such message or order, or one of another account.
var ErrNotFound = errors.New("not found")

// ErrNotCancelable: the message is routed, submitted or final (a worker
// has it, or it is done).
var ErrNotCancelable = errors.New("not cancelable")

// Request says who cancels and why.
type Request struct {
	AccountID string
	KeyID     string // the actor
	Reason    string
	RequestID string // causation and trace of the events
}

// Canceler cancels messages.
type Canceler struct {
	store *eventstore.Store
	now   func() time.Time
	// Batch is how many of an order's messages one transaction cancels
	// (default 500): a large order is canceled in many short transactions,
	// never one that holds the tail back or outlives the statement timeout.
	Batch int
}

// New returns a Canceler.
func New(store *eventstore.Store, now func() time.Time) *Canceler {
	return &Canceler{store: store, now: now, Batch: 500}
}

// conflictRetries bounds how often one batch is read again after losing
// an append race; every retry follows a commit of someone else, so the
// messages are moving on and the bound is only a safeguard.
const conflictRetries = 20

// Message cancels one message. It returns the message as it now stands.
// A message canceled already is answered as it is (a retried request is
// not an error); one routed, submitted, delivered or failed is
// ErrNotCancelable.
func (c *Canceler) Message(ctx context.Context, req Request, messageID string) (domain.Message, error) {
	stream := domain.MessageStream(messageID)
	for range conflictRetries {
		recs, err := c.store.ReadStream(ctx, stream, 1)
		if err != nil {
			return domain.Message{}, err
		}
		m, err := eventstore.LoadMessage(recs)
		if err != nil {
			return domain.Message{}, err
		}
		if len(recs) == 0 || m.AccountID != req.AccountID || req.AccountID == "" {
			return domain.Message{}, fmt.Errorf("message %s: %w", messageID, ErrNotFound)
		}
		if m.State == domain.StateCanceled {
			return m, nil
		}
		ev, err := m.Cancel(req.KeyID, req.Reason, c.now().UTC())
		if err != nil {
			return m, fmt.Errorf("message %s is %s: %w", messageID, m.State.PublicState(), ErrNotCancelable)
		}
		_, err = c.store.Append(ctx, stream, eventstore.Exact(m.Version), eventstore.MustEvent(ev, c.metadata(req, recs)))
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			continue // someone moved it on meanwhile: look again
		}
		if err != nil {
			return m, err
		}
		if err := m.Apply(ev); err != nil {
			return m, err
		}
		return m, nil
	}
	return domain.Message{}, fmt.Errorf("message %s kept changing while being canceled: %w", messageID, eventstore.ErrWrongExpectedVersion)
}

func (c *Canceler) metadata(req Request, recs []eventstore.RecordedEvent) eventstore.Metadata {
	md := eventstore.FollowUp(recs, req.KeyID)
	md.AccountID = req.AccountID
	if req.RequestID != "" {
		md.CausationID, md.TraceID = req.RequestID, req.RequestID
	}
	return md
}

// OrderResult is what an order cancel did: Canceled counts the order's
// messages that are canceled now (by this request or an earlier one, so a
// retried request answers alike), NotCancelable the others.
type OrderResult struct {
	Canceled      int `json:"canceled"`
	NotCancelable int `json:"not_cancelable"`
}

// orderMessagesSQL pages through an order's message streams. They were
// accepted in the order's own transaction (handlers/commands/orders), so
// they are the MessageAccepted events that share its transaction id: a
// range of events_type_tail, read from the store itself, so an order
// accepted a moment ago is canceled whole, whatever the projector's lag.
const orderMessagesSQL = `-- name: cancel.order_messages
SELECT stream_id, global_position FROM events
WHERE type = 'MessageAccepted' AND xid = $1 AND global_position > $3 AND data->>'order_id' = $2
ORDER BY global_position LIMIT $4`

// Order cancels every message of the order that no worker holds yet, a
// batch per transaction. It is safe to repeat: an interrupted request has
// canceled a part of the order, and a retry cancels the rest and counts
// what the first one canceled as canceled.
func (c *Canceler) Order(ctx context.Context, req Request, orderID string) (OrderResult, error) {
	var res OrderResult
	orderRecs, err := c.store.ReadStream(ctx, domain.OrderStream(orderID), 1)
	if err != nil {
		return res, err
	}
	var order domain.Order
	for _, r := range orderRecs {
		ev, err := r.Decode()
		if err != nil {
			return res, err
		}
		if err := order.Apply(ev); err != nil {
			return res, err
		}
	}
	if order.ID == "" || order.AccountID != req.AccountID || req.AccountID == "" {
		return res, fmt.Errorf("order %s: %w", orderID, ErrNotFound)
	}
	batch := max(c.Batch, 1)
	after := int64(0)
	for seen := 0; seen < order.MessageCount; {
		rows, err := c.store.Pool().Query(ctx, orderMessagesSQL, orderRecs[0].XID, orderID, after, batch)
		if err != nil {
			return res, err
		}
		var streams []string
		for rows.Next() {
			var s string
			if err := rows.Scan(&s, &after); err != nil {
				rows.Close()
				return res, err
			}
			streams = append(streams, s)
		}
		if err := rows.Err(); err != nil {
			return res, err
		}
		if len(streams) == 0 {
			return res, fmt.Errorf("order %s: %d of its %d messages found in its transaction", orderID, seen, order.MessageCount)
		}
		seen += len(streams)
		r, err := c.batch(ctx, req, streams)
		if err != nil {
			return res, err
		}
		res.Canceled, res.NotCancelable = res.Canceled+r.Canceled, res.NotCancelable+r.NotCancelable
	}
	return res, nil
}

// batch cancels what it can of the message streams in one transaction, reading them again
// when a worker (or the expirer) moved one on meanwhile.
func (c *Canceler) batch(ctx context.Context, req Request, streams []string) (OrderResult, error) {
	for range conflictRetries {
		var res OrderResult
		err := c.store.InTx(ctx, func(tx *eventstore.Tx) error {
			res = OrderResult{}
			loaded, err := eventstore.ReadStreams(ctx, tx, streams)
			if err != nil {
				return err
			}
			now := c.now().UTC()
			var appends []eventstore.StreamAppend
			for _, s := range streams {
				recs := loaded[s]
				m, err := eventstore.LoadMessage(recs)
				if err != nil {
					return err
				}
				if m.State == domain.StateCanceled {
					res.Canceled++
					continue
				}
				ev, err := m.Cancel(req.KeyID, req.Reason, now)
				if err != nil {
					res.NotCancelable++
					continue
				}
				appends = append(appends, eventstore.StreamAppend{Stream: s, Expected: eventstore.Exact(m.Version),
					Events: []eventstore.EventData{eventstore.MustEvent(ev, c.metadata(req, recs))}})
				res.Canceled++
			}
			if len(appends) == 0 {
				return nil
			}
			_, err = tx.Append(ctx, appends...)
			return err
		})
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			continue
		}
		return res, err
	}
	return OrderResult{}, fmt.Errorf("an order's messages kept changing while being canceled: %w", eventstore.ErrWrongExpectedVersion)
}
