package domain

import (
	"encoding/json"
	"time"
)

// OrderAccepted opens an order stream. It is appended in the same
// transaction as the account's BalanceReserved and every MessageAccepted.
type OrderAccepted struct {
	OrderID         string    `json:"order_id"`
	AccountID       string    `json:"account_id"`
	MessageCount    int       `json:"message_count"`
	Price           Money     `json:"price"`
	ValiditySeconds int       `json:"validity_seconds"`
	ExpiresAt       time.Time `json:"expires_at"`
	// SendAt is when the order's messages are to go out (zero: at once);
	// ExpiresAt is SendAt plus the validity then.
	SendAt         time.Time       `json:"send_at,omitzero"`
	ClientMetadata json.RawMessage `json:"client_metadata,omitempty"`
	IdempotencyKey string          `json:"idempotency_key,omitempty"`
	At             time.Time       `json:"at"`
}

// OrderCounts are the final tallies of an order's messages.
type OrderCounts struct {
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
	Expired   int `json:"expired"` // a subset of Failed: failed with code expired
	Canceled  int `json:"canceled,omitempty"`
}

// OrderCompleted is appended once every message of the order is final.
type OrderCompleted struct {
	Counts   OrderCounts `json:"counts"`
	Charged  Money       `json:"charged"`
	Refunded Money       `json:"refunded"`
	At       time.Time   `json:"at"`
}

// EventType implementations.
func (OrderAccepted) EventType() string  { return "OrderAccepted" }
func (OrderCompleted) EventType() string { return "OrderCompleted" }

// SchemaVersion implementations.
func (OrderAccepted) SchemaVersion() int  { return 1 }
func (OrderCompleted) SchemaVersion() int { return 1 }
