package projections

import (
	"encoding/json"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
)

// Order is an order as the read model holds it.
type Order struct {
	ID              string
	AccountID       string
	MessageCount    int
	Price           domain.Money
	ValiditySeconds int
	ExpiresAt       time.Time
	// SendAt is the order's send_at (zero: at once).
	SendAt     time.Time
	AcceptedAt time.Time
	// StartedAt is when the first message left accepted; CompletedAt when
	// OrderCompleted was recorded.
	StartedAt   time.Time
	CompletedAt time.Time
	Counts      Counts
	// Charged and Refunded sum the account's BalanceCharged and
	// BalanceReleased events for this order so far.
	Charged, Refunded domain.Money
	// Metadata is the client's JSON object from the order (nil: none).
	Metadata json.RawMessage
	// Version is the order stream's version folded.
	Version int
}

// Counts are an order's messages by public state. Expired is the part of
// Failed that failed with code expired.
type Counts struct {
	Scheduled, Accepted, Queued, Routed, Submitted, Delivered, Failed, Canceled, Expired int
}

// State is the order's public state: completed once OrderCompleted is
// recorded, executing once any message has left accepted, else accepted.
func (o *Order) State() domain.OrderState {
	switch {
	case !o.CompletedAt.IsZero():
		return domain.OrderStateCompleted
	case o.Counts.Queued+o.Counts.Routed+o.Counts.Submitted+o.Counts.Delivered+o.Counts.Failed+o.Counts.Canceled > 0:
		return domain.OrderStateExecuting
	}
	return domain.OrderStateAccepted
}

func (c *Counts) add(state string, n int) {
	switch state {
	case "scheduled":
		c.Scheduled += n
	case "canceled":
		c.Canceled += n
	case "accepted":
		c.Accepted += n
	case "queued":
		c.Queued += n
	case "routed":
		c.Routed += n
	case "submitted":
		c.Submitted += n
	case "delivered":
		c.Delivered += n
	case "failed":
		c.Failed += n
	}
}

// aggregate rebuilds the order aggregate the next order event folds into.
func (o *Order) aggregate() domain.Order {
	a := domain.Order{ID: o.ID, AccountID: o.AccountID, MessageCount: o.MessageCount, Price: o.Price,
		ValiditySeconds: o.ValiditySeconds, ExpiresAt: o.ExpiresAt, SendAt: o.SendAt, AcceptedAt: o.AcceptedAt,
		CompletedAt: o.CompletedAt, ClientMetadata: o.Metadata, Version: o.Version}
	switch {
	case !o.CompletedAt.IsZero():
		a.State = domain.OrderStateCompleted
	case o.Version > 0:
		a.State = domain.OrderStateAccepted
	}
	return a
}

// setFrom copies what the order stream says into the row; counts and money
// come from other streams and stay.
func (o *Order) setFrom(a *domain.Order) {
	o.AccountID, o.MessageCount, o.Price, o.ValiditySeconds = a.AccountID, a.MessageCount, a.Price, a.ValiditySeconds
	o.ExpiresAt, o.AcceptedAt, o.CompletedAt, o.Version = stored(a.ExpiresAt), stored(a.AcceptedAt), stored(a.CompletedAt), a.Version
	o.Charged.Currency, o.Refunded.Currency = a.Price.Currency, a.Price.Currency
	o.Metadata, o.SendAt = a.ClientMetadata, stored(a.SendAt)
}

const orderColumns = `order_id, account_id, message_count, price_micros, currency, validity_seconds,
    expires_at, accepted_at, started_at, completed_at,
    count_accepted, count_queued, count_routed, count_submitted, count_delivered, count_failed, count_expired,
    charged_micros, refunded_micros, version, metadata, send_at, count_scheduled, count_canceled`

func scanOrder(row pgx.CollectableRow) (Order, error) {
	var o Order
	var expires, accepted, started, completed, sendAt *time.Time
	err := row.Scan(&o.ID, &o.AccountID, &o.MessageCount, &o.Price.AmountMicros, &o.Price.Currency, &o.ValiditySeconds,
		&expires, &accepted, &started, &completed,
		&o.Counts.Accepted, &o.Counts.Queued, &o.Counts.Routed, &o.Counts.Submitted, &o.Counts.Delivered,
		&o.Counts.Failed, &o.Counts.Expired, &o.Charged.AmountMicros, &o.Refunded.AmountMicros, &o.Version, &o.Metadata,
		&sendAt, &o.Counts.Scheduled, &o.Counts.Canceled)
	o.ExpiresAt, o.AcceptedAt, o.StartedAt, o.CompletedAt = deref(expires), deref(accepted), deref(started), deref(completed)
	o.SendAt = deref(sendAt)
	o.Charged.Currency, o.Refunded.Currency = o.Price.Currency, o.Price.Currency
	return o, err
}
