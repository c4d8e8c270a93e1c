package projections

import "errors"

// Tenant is whose rows a query may see: one account, or (for the admin
// scope) every account. The zero Tenant sees nothing, so a forgotten
// account id fails closed.
type Tenant struct {
	accountID string
	all       bool
}

// ForAccount limits a query to one account's rows.
func ForAccount(accountID string) Tenant { return Tenant{accountID: accountID} }

// AnyAccount lets a query see every account's rows (admin scope only).
func AnyAccount() Tenant { return Tenant{all: true} }

// Sees reports whether rows of accountID are visible to t.
func (t Tenant) Sees(accountID string) bool {
	return t.all || (t.accountID != "" && t.accountID == accountID)
}

// args are the values of the two parameters every tenant-scoped query
// ends its WHERE clause with, "$all OR (account_id = $acct AND $acct is
// not empty)": an empty account id matches nothing, not the rows that
// have none.
func (t Tenant) args() (bool, string) { return t.all, t.accountID }

// The errors queries return.
var (
	// ErrNotFound: no such resource, or one the tenant may not see. The
	// two are one error on purpose.
	ErrNotFound = errors.New("not found")
	// ErrInvalidQuery: a cursor that is not one of ours, or an impossible
	// filter.
	ErrInvalidQuery = errors.New("invalid query")
)
