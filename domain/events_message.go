package domain

import (
	"encoding/json"
	"time"
)

// MessageAccepted opens a message stream: the message passed validation,
// was priced, and its price is part of the order's reservation.
type MessageAccepted struct {
	MessageID string    `json:"message_id"`
	OrderID   string    `json:"order_id"`
	AccountID string    `json:"account_id"`
	Index     int       `json:"index"` // position in the order request
	To        string    `json:"to"`    // E.164
	Country   string    `json:"country"`
	From      string    `json:"from,omitempty"`
	Body      string    `json:"body"`
	Encoding  string    `json:"encoding"` // gsm7 | ucs2
	Segments  int       `json:"segments"`
	Price     Money     `json:"price"`
	ExpiresAt time.Time `json:"expires_at"`
	// SendAt is the time the client asked for (zero: at once). The message
	// waits as scheduled until then; its validity counts from it.
	SendAt time.Time `json:"send_at,omitzero"`
	// RedriveOf is the failed message this one sends again (empty for a
	// message of a client's own order): see MessageRedriven.
	RedriveOf string    `json:"redrive_of,omitempty"`
	At        time.Time `json:"at"`
}

// Scheduled reports whether the message is to wait for its SendAt: one
// whose send_at was not after its acceptance goes out at once.
func (e MessageAccepted) Scheduled() bool { return e.SendAt.After(e.At) }

// MessageQueued records that a dispatch job for an attempt is durably stored
// on the work queue (not merely that someone intends to queue it).
type MessageQueued struct {
	Attempt int       `json:"attempt"`
	JobID   string    `json:"job_id,omitempty"`
	At      time.Time `json:"at"`
}

// MessageRouted records the routing decision for an attempt.
type MessageRouted struct {
	Attempt int           `json:"attempt"`
	Route   RouteDecision `json:"route"`
	At      time.Time     `json:"at"`
}

// MessageSubmitted records that a provider accepted an attempt.
type MessageSubmitted struct {
	Attempt           int       `json:"attempt"`
	Provider          string    `json:"provider"`
	ProviderMessageID string    `json:"provider_message_id"`
	LatencyMillis     int64     `json:"latency_ms"`
	At                time.Time `json:"at"`
}

// MessageDelivered is final: the handset got it, per the provider's receipt.
type MessageDelivered struct {
	Attempt           int             `json:"attempt"`
	Provider          string          `json:"provider"`
	ProviderMessageID string          `json:"provider_message_id"`
	DoneAt            time.Time       `json:"done_at,omitzero"` // the provider's own timestamp
	Receipt           json.RawMessage `json:"receipt,omitempty"`
	At                time.Time       `json:"at"`
}

// MessageFailed is final: a permanent failure, attempts exhausted or the
// validity elapsed. Receipt holds the raw provider receipt when one caused it.
type MessageFailed struct {
	Attempt int             `json:"attempt"`
	Failure Failure         `json:"failure"`
	Receipt json.RawMessage `json:"receipt,omitempty"`
	At      time.Time       `json:"at"`
}

// MessageRetried records a transient failure of Attempt and schedules
// NextAttempt no earlier than NotBefore. The attempt number is part of the
// event so the schedule can always be derived from the history.
type MessageRetried struct {
	Attempt     int             `json:"attempt"`
	NextAttempt int             `json:"next_attempt"`
	NotBefore   time.Time       `json:"not_before"`
	Failure     Failure         `json:"failure"`
	Receipt     json.RawMessage `json:"receipt,omitempty"`
	At          time.Time       `json:"at"`
}

// MessageCanceled is final: the client (or an operator) called the message
// back before any worker routed it. Its price is refunded by the order
// tracker. Actor is the API key id that asked, Reason what it gave.
type MessageCanceled struct {
	Attempt int       `json:"attempt"` // the attempt last queued (0: never queued)
	Actor   string    `json:"actor"`
	Reason  string    `json:"reason,omitempty"`
	At      time.Time `json:"at"`
}

// MessageRedriven records, on a failed message's own stream, that it was
// sent again as the new message RedrivenAs of the new order OrderID
// (whose MessageAccepted names this one in RedriveOf). The original stays
// failed, its refund untouched; the copy is priced and reserved anew.
// It is appended in the transaction that accepts the new order, at the
// version the re-drive read, so a message is re-driven at most once.
// Actor is the API key id that asked, Reason what it gave.
type MessageRedriven struct {
	RedrivenAs string    `json:"redriven_as"`
	OrderID    string    `json:"order_id"`
	Actor      string    `json:"actor"`
	Reason     string    `json:"reason"`
	At         time.Time `json:"at"`
}

// EventType implementations: the stable stored names.
func (MessageAccepted) EventType() string  { return "MessageAccepted" }
func (MessageQueued) EventType() string    { return "MessageQueued" }
func (MessageRouted) EventType() string    { return "MessageRouted" }
func (MessageSubmitted) EventType() string { return "MessageSubmitted" }
func (MessageDelivered) EventType() string { return "MessageDelivered" }
func (MessageFailed) EventType() string    { return "MessageFailed" }
func (MessageRetried) EventType() string   { return "MessageRetried" }
func (MessageCanceled) EventType() string  { return "MessageCanceled" }
func (MessageRedriven) EventType() string  { return "MessageRedriven" }

// SchemaVersion implementations: every message event is at version 1.
func (MessageAccepted) SchemaVersion() int  { return 1 }
func (MessageQueued) SchemaVersion() int    { return 1 }
func (MessageRouted) SchemaVersion() int    { return 1 }
func (MessageSubmitted) SchemaVersion() int { return 1 }
func (MessageDelivered) SchemaVersion() int { return 1 }
func (MessageFailed) SchemaVersion() int    { return 1 }
func (MessageRetried) SchemaVersion() int   { return 1 }
func (MessageCanceled) SchemaVersion() int  { return 1 }
func (MessageRedriven) SchemaVersion() int  { return 1 }
