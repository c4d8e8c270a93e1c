package projections

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
)

// AccountPage is one page of the account list. Next is the opaque cursor
// of the following page, "" on the last one.
type AccountPage struct {
	Accounts []Account
	Next     string
}

// Accounts are listed in id order: ids are ULIDs, so that is the order
// they were opened in, and the primary key serves every page.
const listAccountsSQL = `-- name: list_accounts
SELECT ` + accountColumns + ` FROM read_accounts WHERE account_id > $1 ORDER BY account_id LIMIT $2`

// ListAccounts lists every account (an operator's view: no tenant),
// oldest first, limit a page, from the read model: an account opened a
// moment ago appears once the projector has folded it.
func ListAccounts(ctx context.Context, q eventstore.Querier, limit int, cursor string) (AccountPage, error) {
	after := ""
	if cursor != "" {
		var err error
		if after, err = decodeCursor(cursor, 'a'); err != nil {
			return AccountPage{}, err
		}
	}
	rows, err := q.Query(ctx, listAccountsSQL, after, limit+1)
	if err != nil {
		return AccountPage{}, err
	}
	all, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return AccountPage{}, err
	}
	p := AccountPage{Accounts: all}
	if len(all) > limit {
		p.Accounts = all[:limit]
		p.Next = encodeCursor("a" + p.Accounts[limit-1].ID)
	}
	return p, nil
}
