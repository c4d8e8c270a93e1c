package domain

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// OrderState is the order's own lifecycle. "executing" is not an event of
// the order stream: read models derive it from its messages' progress.
type OrderState string

// Order states.
const (
	OrderStateAccepted  OrderState = "accepted"
	OrderStateExecuting OrderState = "executing"
	OrderStateCompleted OrderState = "completed"
)

// ErrOrderCompleted is returned when an order is completed twice.
var ErrOrderCompleted = errors.New("order already completed")

// Order is the order aggregate.
type Order struct {
	ID              string
	AccountID       string
	MessageCount    int
	Price           Money
	ValiditySeconds int
	ExpiresAt       time.Time
	SendAt          time.Time
	State           OrderState
	Counts          OrderCounts
	Charged         Money
	Refunded        Money
	AcceptedAt      time.Time
	CompletedAt     time.Time
	// ClientMetadata is the JSON object the client sent with the order,
	// shown back on every read.
	ClientMetadata json.RawMessage
	Version        int
}

// Complete closes the order once every message is final. The counts must
// add up to the order's message count: an order is never completed early.
func (o *Order) Complete(c OrderCounts, charged, refunded Money, at time.Time) (OrderCompleted, error) {
	e := OrderCompleted{Counts: c, Charged: charged, Refunded: refunded, At: at}
	if o.State == OrderStateCompleted {
		return e, fmt.Errorf("order %s: %w", o.ID, ErrOrderCompleted)
	}
	if c.Delivered+c.Failed+c.Canceled != o.MessageCount || c.Expired > c.Failed || c.Delivered < 0 || c.Expired < 0 || c.Canceled < 0 {
		return e, fmt.Errorf("order %s: counts %+v do not close %d messages: %w", o.ID, c, o.MessageCount, ErrIllegalTransition)
	}
	return e, nil
}

// Apply folds one order event.
func (o *Order) Apply(ev Event) error {
	switch e := ev.(type) {
	case OrderAccepted:
		if o.Version != 0 {
			return fmt.Errorf("order %s: %w: accepted twice", o.ID, ErrIllegalTransition)
		}
		o.ID, o.AccountID, o.MessageCount, o.Price = e.OrderID, e.AccountID, e.MessageCount, e.Price
		o.ValiditySeconds, o.ExpiresAt, o.AcceptedAt, o.State = e.ValiditySeconds, e.ExpiresAt, e.At, OrderStateAccepted
		o.ClientMetadata, o.SendAt = e.ClientMetadata, e.SendAt
	case OrderCompleted:
		if o.State != OrderStateAccepted {
			return fmt.Errorf("order %s: %w", o.ID, ErrOrderCompleted)
		}
		o.State, o.Counts, o.Charged, o.Refunded, o.CompletedAt = OrderStateCompleted, e.Counts, e.Charged, e.Refunded, e.At
	default:
		return fmt.Errorf("%w: %s is not an order event", ErrIllegalTransition, ev.EventType())
	}
	o.Version++
	return nil
}
