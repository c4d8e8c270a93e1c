package projections

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// OrderStates lists the public order states a filter may name.
func OrderStates() []string {
	return []string{string(domain.OrderStateAccepted), string(domain.OrderStateExecuting), string(domain.OrderStateCompleted)}
}

// OrderList is the order listing's filter. Zero fields do not filter.
type OrderList struct {
	State        string
	Since, Until time.Time // accepted at ≥ Since and < Until
	Limit        int
	Cursor       string
}

// OrderPage is one page of the order listing. Next is the opaque cursor of
// the following page, "" on the last one.
type OrderPage struct {
	Orders []Order
	Next   string
}

// listOrdersSQL is an account's orders, newest first. Each call is planned
// with its actual filters (QueryExecModeExec), so the absent ones fold away
// and the page is read in the order of read_orders_account, or of
// read_orders_account_state when a state is named (schema migration 0020;
// TestOrderListingUsesItsIndexes holds the plans to it).
const listOrdersSQL = `-- name: list_orders
SELECT ` + orderColumns + ` FROM read_orders
WHERE account_id = $1 AND accepted_at IS NOT NULL
  AND ($2::text IS NULL OR state = $2::text)
  AND ($3::timestamptz IS NULL OR accepted_at >= $3::timestamptz)
  AND ($4::timestamptz IS NULL OR accepted_at < $4::timestamptz)
  AND ($5::timestamptz IS NULL OR (accepted_at, order_id) < ($5::timestamptz, $6::text))
ORDER BY accepted_at DESC, order_id DESC LIMIT $7`

// ListOrders lists one account's orders, newest first, from the read
// model: an order accepted a moment ago appears once the projector has
// folded it (GET /v1/orders/{id} finds it at once, from its stream).
func ListOrders(ctx context.Context, q eventstore.Querier, accountID string, l OrderList) (OrderPage, error) {
	if accountID == "" {
		return OrderPage{}, fmt.Errorf("%w: a listing is within one account", ErrInvalidQuery)
	}
	if l.State != "" && !contains(OrderStates(), l.State) {
		return OrderPage{}, fmt.Errorf("%w: state %q (one of %s)", ErrInvalidQuery, l.State, strings.Join(OrderStates(), ", "))
	}
	at, id, err := parseOrderCursor(l.Cursor)
	if err != nil {
		return OrderPage{}, err
	}
	rows, err := q.Query(ctx, listOrdersSQL, pgx.QueryExecModeExec, accountID, nullable(l.State),
		nullTime(l.Since), nullTime(l.Until), at, id, l.Limit+1)
	if err != nil {
		return OrderPage{}, err
	}
	os, err := pgx.CollectRows(rows, scanOrder)
	if err != nil {
		return OrderPage{}, err
	}
	p := OrderPage{Orders: os}
	if len(os) > l.Limit {
		p.Orders = os[:l.Limit]
		last := &p.Orders[l.Limit-1]
		p.Next = encodeCursor("o" + strconv.FormatInt(last.AcceptedAt.UnixMicro(), 10) + "." + last.ID)
	}
	return p, nil
}

func parseOrderCursor(c string) (*time.Time, *string, error) {
	if c == "" {
		return nil, nil, nil
	}
	s, err := decodeCursor(c, 'o')
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

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
