package domain

import "time"

// AccountOpened opens an account stream.
type AccountOpened struct {
	AccountID string `json:"account_id"`
	Name      string `json:"name"`
	Currency  string `json:"currency"`
	// AllowedCountries limits destinations (ISO 3166 alpha-2); empty = all.
	AllowedCountries []string  `json:"allowed_countries,omitempty"`
	At               time.Time `json:"at"`
}

// Balances is the account's position right after a money event. Every money
// event carries it, so the current balance is read from the stream's latest
// money event instead of folding a history that grows with every order;
// verify recomputes it by folding and reports any difference.
type Balances struct {
	BalanceAfter  int64 `json:"balance_after"`
	ReservedAfter int64 `json:"reserved_after"`
}

// AccountCredited adds spendable money (the opening credit, a top-up).
type AccountCredited struct {
	Amount    Money  `json:"amount"`
	Reference string `json:"reference,omitempty"`
	Balances
	At time.Time `json:"at"`
}

// BalanceReserved holds an order's price: balance falls at once, reserved
// rises until each message is final.
type BalanceReserved struct {
	OrderID      string `json:"order_id"`
	Amount       Money  `json:"amount"`
	MessageCount int    `json:"message_count"`
	Balances
	At time.Time `json:"at"`
}

// BalanceCharged turns the reservation of delivered messages into a charge:
// reserved falls, balance is unchanged (it already fell at reservation).
type BalanceCharged struct {
	OrderID    string   `json:"order_id"`
	Amount     Money    `json:"amount"`
	MessageIDs []string `json:"message_ids"`
	Balances
	At time.Time `json:"at"`
}

// BalanceReleased refunds the reservation of failed messages: reserved
// falls and balance rises by the same amount. Each message is released at
// most once (the order tracker guarantees it; verify checks it).
type BalanceReleased struct {
	OrderID    string   `json:"order_id"`
	Amount     Money    `json:"amount"`
	MessageIDs []string `json:"message_ids"`
	Reason     string   `json:"reason"`
	Balances
	At time.Time `json:"at"`
}

// BalanceCredited is an operator's top-up of an account after it was
// opened (AccountCredited is the opening credit): spendable money added,
// with the reason the operator gave. Who credited it is the event's actor.
type BalanceCredited struct {
	Amount Money  `json:"amount"`
	Reason string `json:"reason"`
	Balances
	At time.Time `json:"at"`
}

// APIKeyIssued records that an API key exists for the account (its hash is
// kept in the api_keys table, never in an event). Reason is what the
// issuer said, if anything (a first key has none); who issued it is the
// event's actor.
type APIKeyIssued struct {
	KeyID  string    `json:"key_id"`
	Scopes []string  `json:"scopes"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// APIKeyRevoked records that an API key stopped working: the api_keys row
// has revoked_at set in the same transaction, and every process refuses
// the key within a second of it.
type APIKeyRevoked struct {
	KeyID  string    `json:"key_id"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// EventType implementations.
func (AccountOpened) EventType() string   { return "AccountOpened" }
func (AccountCredited) EventType() string { return "AccountCredited" }
func (BalanceReserved) EventType() string { return "BalanceReserved" }
func (BalanceCharged) EventType() string  { return "BalanceCharged" }
func (BalanceReleased) EventType() string { return "BalanceReleased" }
func (APIKeyIssued) EventType() string    { return "APIKeyIssued" }
func (BalanceCredited) EventType() string { return "BalanceCredited" }
func (APIKeyRevoked) EventType() string   { return "APIKeyRevoked" }

// SchemaVersion implementations.
func (AccountOpened) SchemaVersion() int   { return 1 }
func (AccountCredited) SchemaVersion() int { return 1 }
func (BalanceReserved) SchemaVersion() int { return 1 }
func (BalanceCharged) SchemaVersion() int  { return 1 }
func (BalanceReleased) SchemaVersion() int { return 1 }
func (APIKeyIssued) SchemaVersion() int    { return 1 }
func (BalanceCredited) SchemaVersion() int { return 1 }
func (APIKeyRevoked) SchemaVersion() int   { return 1 }
