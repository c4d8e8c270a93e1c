package projections

import (
	"context"
	"fmt"
	"math"
	"strconv"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// AccountEventPage is a page of an account's own stream, newest first.
type AccountEventPage struct {
	Events []StoredEvent
	// Next is the cursor of the page of older events ("" on the last).
	Next string
}

// accountEventsSQL reads the account's stream backwards from a version,
// along its primary key (stream_id, stream_version): a page costs its rows
// however long the account's history (every reservation, charge and
// release of every message it sent is on it).
const accountEventsSQL = `-- name: account_events
SELECT global_position, stream_id, stream_version, event_id, type, schema_version, account_id,
    data, metadata, recorded_at, prev_hash, hash
FROM events WHERE stream_id = $1 AND stream_version < $2
ORDER BY stream_version DESC LIMIT $3`

// AccountEvents returns a page of the account's money history (the events
// of its stream: opening, credits, reservations, charges, releases), the
// newest first: what a support person asks about is the recent part of
// it. cursor is a previous page's Next ("" for the newest). An account
// the tenant may not see, or none, is ErrNotFound.
func AccountEvents(ctx context.Context, q eventstore.Querier, t Tenant, accountID string, limit int, cursor string) (AccountEventPage, error) {
	if !t.Sees(accountID) {
		return AccountEventPage{}, ErrNotFound
	}
	before := int64(math.MaxInt32) // stream_version is an integer
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n < 2 || n > math.MaxInt32 {
			return AccountEventPage{}, fmt.Errorf("%w: cursor is not one of ours", ErrInvalidQuery)
		}
		before = n
	}
	rows, err := q.Query(ctx, accountEventsSQL, domain.AccountStream(accountID), before, limit+1)
	if err != nil {
		return AccountEventPage{}, err
	}
	evs, err := pgx.CollectRows(rows, scanStoredEvent)
	if err != nil {
		return AccountEventPage{}, err
	}
	if len(evs) == 0 {
		if cursor == "" {
			return AccountEventPage{}, ErrNotFound
		}
		return AccountEventPage{Events: []StoredEvent{}}, nil
	}
	page := AccountEventPage{Events: evs}
	if len(evs) > limit {
		page.Events = evs[:limit]
		page.Next = strconv.Itoa(page.Events[limit-1].Version)
	}
	return page, nil
}
