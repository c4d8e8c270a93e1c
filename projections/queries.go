package projections

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// States lists the public message states a filter may name. expired is
// not a state of its own (an expired message is failed, with failure code
// expired) but the part of failed that order counts show apart, so a
// client can list what it counts.
func States() []string {
	return []string{"scheduled", "accepted", "queued", "routed", "submitted", "delivered", "failed", "canceled", StateExpired}
}

// StateExpired filters failed messages whose failure code is expired.
const StateExpired = "expired"

// stateFilter splits a state filter into the state column's value and
// the failure code it implies (expired), each nil when absent.
func stateFilter(state string) (*string, *string) {
	if state == StateExpired {
		failed, code := "failed", domain.CodeExpired
		return &failed, &code
	}
	return nullable(state), nil
}

const (
	getMessageSQL = `SELECT ` + messageColumns + ` FROM read_messages
WHERE message_id = $1 AND ($2::bool OR (account_id = $3::text AND $3::text <> ''))`

	getOrderSQL = `SELECT ` + orderColumns + ` FROM read_orders
WHERE order_id = $1 AND ($2::bool OR (account_id = $3::text AND $3::text <> ''))`

	getAccountSQL = `SELECT ` + accountColumns + ` FROM read_accounts
WHERE account_id = $1 AND ($2::bool OR (account_id = $3::text AND $3::text <> ''))`

	// An order's messages in request order. Run with custom plans
	// (QueryExecModeExec) so that an absent state filter folds away and a
	// present one can use read_messages_order_state.
	orderMessagesSQL = `SELECT ` + messageColumns + ` FROM read_messages
WHERE order_id = $1 AND ($2::text IS NULL OR state = $2::text) AND idx > $3
  AND ($4::bool OR (account_id = $5::text AND $5::text <> ''))
  AND ($7::text IS NULL OR failure->>'code' = $7::text)
ORDER BY idx LIMIT $6`

	// The support search, newest first. Each call is planned with its
	// actual filters (QueryExecModeExec): the absent ones fold away and the
	// planner picks the index that leads with the present ones.
	searchMessagesSQL = `SELECT ` + messageColumns + ` FROM read_messages
WHERE account_id = $1
  AND ($2::text IS NULL OR to_number = $2::text)
  AND ($3::text IS NULL OR state = $3::text)
  AND ($4::timestamptz IS NULL OR accepted_at >= $4::timestamptz)
  AND ($5::timestamptz IS NULL OR accepted_at < $5::timestamptz)
  AND ($6::timestamptz IS NULL OR (accepted_at, message_id) < ($6::timestamptz, $7::text))
  AND ($9::text IS NULL OR failure->>'code' = $9::text)
ORDER BY accepted_at DESC, message_id DESC LIMIT $8`

	// The support search within one order: request order, like the order's
	// own message list.
	searchOrderMessagesSQL = `SELECT ` + messageColumns + ` FROM read_messages
WHERE order_id = $1 AND account_id = $2
  AND ($3::text IS NULL OR to_number = $3::text)
  AND ($4::text IS NULL OR state = $4::text)
  AND ($5::timestamptz IS NULL OR accepted_at >= $5::timestamptz)
  AND ($6::timestamptz IS NULL OR accepted_at < $6::timestamptz)
  AND idx > $7
  AND ($9::text IS NULL OR failure->>'code' = $9::text)
ORDER BY idx LIMIT $8`
)

// GetMessage returns a message as the read model shows it. A message the
// projector has not reached yet (it was accepted a moment ago) is folded
// from its stream instead, so that a client never sees a 404 for an id it
// was just given.
func GetMessage(ctx context.Context, q eventstore.Querier, t Tenant, id string) (Message, error) {
	all, acct := t.args()
	rows, err := q.Query(ctx, getMessageSQL, id, all, acct)
	m, err := one(rows, err, scanMessage)
	if !errors.Is(err, ErrNotFound) {
		return m, err
	}
	return MessageAsOf(ctx, q, t, id, time.Time{})
}

// GetOrder returns an order as the read model shows it, falling back to
// the order stream (every message still accepted) when the projector has
// not reached it yet.
func GetOrder(ctx context.Context, q eventstore.Querier, t Tenant, id string) (Order, error) {
	all, acct := t.args()
	rows, err := q.Query(ctx, getOrderSQL, id, all, acct)
	o, err := one(rows, err, scanOrder)
	if err == nil && o.Version > 0 {
		return o, nil
	}
	if err != nil && !errors.Is(err, ErrNotFound) {
		return o, err
	}
	return orderFromStream(ctx, q, t, id)
}

func orderFromStream(ctx context.Context, q eventstore.Querier, t Tenant, id string) (Order, error) {
	evs, err := eventstore.ReadStream(ctx, q, domain.OrderStream(id), 1)
	if err != nil {
		return Order{}, err
	}
	var agg domain.Order
	for _, e := range evs {
		if ev, err := e.Decode(); err == nil {
			_ = agg.Apply(ev)
		}
	}
	if agg.ID == "" || !t.Sees(agg.AccountID) {
		return Order{}, ErrNotFound
	}
	o := Order{ID: id}
	o.setFrom(&agg)
	if agg.SendAt.After(agg.AcceptedAt) {
		o.Counts.Scheduled = agg.MessageCount
	} else {
		o.Counts.Accepted = agg.MessageCount
	}
	return o, nil
}

// GetAccount returns an account's read-model row.
func GetAccount(ctx context.Context, q eventstore.Querier, t Tenant, id string) (Account, error) {
	all, acct := t.args()
	rows, err := q.Query(ctx, getAccountSQL, id, all, acct)
	return one(rows, err, scanAccount)
}

// MessagePage is one page of a message list. Next is the opaque cursor of
// the following page, "" on the last one.
type MessagePage struct {
	Messages []Message
	Next     string
}

// OrderMessages lists an order's messages in request order, optionally in
// one state. The order must be visible to t.
func OrderMessages(ctx context.Context, q eventstore.Querier, t Tenant, orderID, state string, limit int, cursor string) (MessagePage, error) {
	if _, err := GetOrder(ctx, q, t, orderID); err != nil {
		return MessagePage{}, err
	}
	after, err := parseIndexCursor(cursor)
	if err != nil {
		return MessagePage{}, err
	}
	if err := checkState(state); err != nil {
		return MessagePage{}, err
	}
	all, acct := t.args()
	st, code := stateFilter(state)
	rows, err := q.Query(ctx, orderMessagesSQL, pgx.QueryExecModeExec, orderID, st, after, all, acct, limit+1, code)
	return page(rows, err, limit, indexCursor)
}

// Search is the support search's filter. Zero fields do not filter.
type Search struct {
	To, State, OrderID string
	Since, Until       time.Time // accepted at ≥ Since and < Until
	Limit              int
	Cursor             string
}

// SearchMessages searches one account's messages, newest first (in
// request order when the search names an order).
func SearchMessages(ctx context.Context, q eventstore.Querier, accountID string, s Search) (MessagePage, error) {
	if accountID == "" {
		return MessagePage{}, fmt.Errorf("%w: a search is within one account", ErrInvalidQuery)
	}
	if err := checkState(s.State); err != nil {
		return MessagePage{}, err
	}
	since, until := nullTime(s.Since), nullTime(s.Until)
	st, code := stateFilter(s.State)
	if s.OrderID != "" {
		after, err := parseIndexCursor(s.Cursor)
		if err != nil {
			return MessagePage{}, err
		}
		rows, err := q.Query(ctx, searchOrderMessagesSQL, pgx.QueryExecModeExec, s.OrderID, accountID,
			nullable(s.To), st, since, until, after, s.Limit+1, code)
		return page(rows, err, s.Limit, indexCursor)
	}
	at, id, err := parseTimeCursor(s.Cursor)
	if err != nil {
		return MessagePage{}, err
	}
	rows, err := q.Query(ctx, searchMessagesSQL, pgx.QueryExecModeExec, accountID, nullable(s.To), st,
		since, until, at, id, s.Limit+1, code)
	return page(rows, err, s.Limit, timeCursor)
}

// page collects limit+1 rows into a page of limit, the extra row only
// telling that there is a next page, named by cursor of the last row shown.
func page(rows pgx.Rows, err error, limit int, cursor func(*Message) string) (MessagePage, error) {
	if err != nil {
		return MessagePage{}, err
	}
	ms, err := pgx.CollectRows(rows, scanMessage)
	if err != nil {
		return MessagePage{}, err
	}
	p := MessagePage{Messages: ms}
	if len(ms) > limit {
		p.Messages = ms[:limit]
		p.Next = cursor(&p.Messages[limit-1])
	}
	return p, nil
}

func indexCursor(m *Message) string { return encodeCursor("i" + strconv.Itoa(m.Index)) }

func timeCursor(m *Message) string {
	return encodeCursor("t" + strconv.FormatInt(m.AcceptedAt.UnixMicro(), 10) + "." + m.ID)
}

// Cursors are opaque to clients: base64url of a kind letter and the key
// of the last row returned. They name rows by keys that never change once
// written (an order's index; accepted_at and the message id), so a page
// boundary holds however the rows around it change.
func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func decodeCursor(c string, kind byte) (string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) < 2 || b[0] != kind {
		return "", fmt.Errorf("%w: cursor %q is not one this list returned", ErrInvalidQuery, c)
	}
	return string(b[1:]), nil
}

func parseIndexCursor(c string) (int, error) {
	if c == "" {
		return -1, nil
	}
	s, err := decodeCursor(c, 'i')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: cursor %q is not one this list returned", ErrInvalidQuery, c)
	}
	return n, nil
}

func parseTimeCursor(c string) (*time.Time, *string, error) {
	if c == "" {
		return nil, nil, nil
	}
	s, err := decodeCursor(c, 't')
	if err != nil {
		return nil, nil, err
	}
	micros, id, ok := strings.Cut(s, ".")
	us, err := strconv.ParseInt(micros, 10, 64)
	if !ok || err != nil || id == "" {
		return nil, nil, fmt.Errorf("%w: cursor %q is not one this list returned", ErrInvalidQuery, c)
	}
	t := time.UnixMicro(us).UTC()
	return &t, &id, nil
}

func checkState(s string) error {
	if s == "" {
		return nil
	}
	for _, v := range States() {
		if v == s {
			return nil
		}
	}
	return fmt.Errorf("%w: state %q (one of %s)", ErrInvalidQuery, s, strings.Join(States(), ", "))
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

// one collects a one-row query, mapping "no row" to ErrNotFound.
func one[T any](rows pgx.Rows, err error, scan pgx.RowToFunc[T]) (T, error) {
	var zero T
	if err != nil {
		return zero, err
	}
	v, err := pgx.CollectExactlyOneRow(rows, scan)
	if errors.Is(err, pgx.ErrNoRows) {
		return zero, ErrNotFound
	}
	return v, err
}
