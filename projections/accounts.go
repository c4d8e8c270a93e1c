package projections

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// Account is an account as the read model holds it: its balances as the
// latest money event recorded them, and running totals of what was
// credited, spent (charged) and refunded (released).
type Account struct {
	ID               string
	Name             string
	Currency         string
	AllowedCountries []string
	Balance          int64
	Reserved         int64
	Credited         int64
	Spent            int64
	Refunded         int64
	OpenedAt         time.Time
	Version          int
}

func accountsProjection() Projection {
	return Projection{
		Name:   "accounts",
		Tables: []string{"read_accounts"},
		Types: domain.TypesOf(domain.AccountOpened{}, domain.AccountCredited{}, domain.BalanceCredited{}, domain.BalanceReserved{},
			domain.BalanceCharged{}, domain.BalanceReleased{}, domain.APIKeyIssued{}, domain.APIKeyRevoked{}),
		Sparse:       true,
		PartitionKey: eventstore.ByAccount,
		apply:        applyAccounts,
	}
}

const (
	accountColumns = `account_id, name, currency, allowed_countries, balance_micros, reserved_micros,
    credited_micros, spent_micros, refunded_micros, opened_at, version`

	loadAccountsSQL = `SELECT ` + accountColumns + ` FROM read_accounts WHERE account_id = ANY($1::text[])`

	upsertAccountSQL = `INSERT INTO read_accounts (` + accountColumns + `)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
ON CONFLICT (account_id) DO UPDATE SET
    name = excluded.name, currency = excluded.currency, allowed_countries = excluded.allowed_countries,
    balance_micros = excluded.balance_micros, reserved_micros = excluded.reserved_micros,
    credited_micros = excluded.credited_micros, spent_micros = excluded.spent_micros,
    refunded_micros = excluded.refunded_micros, opened_at = excluded.opened_at, version = excluded.version
WHERE read_accounts.version < excluded.version`
)

func scanAccount(row pgx.CollectableRow) (Account, error) {
	var a Account
	err := row.Scan(&a.ID, &a.Name, &a.Currency, &a.AllowedCountries, &a.Balance, &a.Reserved,
		&a.Credited, &a.Spent, &a.Refunded, &a.OpenedAt, &a.Version)
	a.OpenedAt = a.OpenedAt.UTC()
	return a, err
}

// foldAccount applies one event to the aggregate and the row's totals.
func foldAccount(agg *domain.Account, row *Account, ev domain.Event) error {
	if err := agg.Apply(ev); err != nil {
		return err
	}
	switch e := ev.(type) {
	case domain.AccountCredited:
		row.Credited += e.Amount.AmountMicros
	case domain.BalanceCredited:
		row.Credited += e.Amount.AmountMicros
	case domain.BalanceCharged:
		row.Spent += e.Amount.AmountMicros
	case domain.BalanceReleased:
		row.Refunded += e.Amount.AmountMicros
	}
	return nil
}

func (a *Account) aggregate() domain.Account {
	return domain.Account{ID: a.ID, Name: a.Name, Currency: a.Currency, AllowedCountries: a.AllowedCountries,
		Balance: a.Balance, Reserved: a.Reserved, Version: a.Version, OpenedAt: a.OpenedAt}
}

func (a *Account) setFrom(agg *domain.Account) {
	a.ID, a.Name, a.Currency, a.AllowedCountries = agg.ID, agg.Name, agg.Currency, agg.AllowedCountries
	a.Balance, a.Reserved, a.OpenedAt, a.Version = agg.Balance, agg.Reserved, stored(agg.OpenedAt), agg.Version
	if a.AllowedCountries == nil {
		a.AllowedCountries = []string{}
	}
}

// applyAccounts folds each account's new events onto its row. Accounts are
// few and their batches small (a few money events per order), so rows are
// written one statement each, pipelined.
func applyAccounts(ctx context.Context, tx pgx.Tx, batch []eventstore.RecordedEvent) (result, error) {
	var res result
	var ids []string
	seen := map[string]bool{}
	for _, e := range batch {
		if id, _ := domain.AccountIDOf(e.StreamID); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	rows, err := tx.Query(ctx, loadAccountsSQL, ids)
	if err != nil {
		return res, fmt.Errorf("load accounts: %w", err)
	}
	loaded, err := pgx.CollectRows(rows, scanAccount)
	if err != nil {
		return res, fmt.Errorf("load accounts: %w", err)
	}
	current := map[string]*Account{}
	for i := range loaded {
		current[domain.AccountStream(loaded[i].ID)] = &loaded[i]
	}
	streams, err := inVersionOrder(ctx, tx, batch, func(s string) int {
		if a := current[s]; a != nil {
			return a.Version
		}
		return 0
	})
	if err != nil {
		return res, err
	}
	pb := &pgx.Batch{}
	for _, s := range streams {
		if len(s.events) == 0 {
			continue
		}
		row := current[s.stream]
		if row == nil {
			row = &Account{}
		}
		agg := row.aggregate()
		for _, e := range s.events {
			prev := agg
			ev, err := e.Decode()
			if err == nil {
				err = foldAccount(&agg, row, ev)
			}
			if err != nil {
				// Account.Apply may have moved the balances before it
				// found them inconsistent: a refused event changes nothing.
				res.refuse(e, err)
				agg = prev
				agg.Version = e.Version
			}
		}
		if agg.ID == "" {
			continue
		}
		row.setFrom(&agg)
		pb.Queue(upsertAccountSQL, row.ID, row.Name, row.Currency, row.AllowedCountries, row.Balance, row.Reserved,
			row.Credited, row.Spent, row.Refunded, row.OpenedAt, row.Version)
	}
	if pb.Len() == 0 {
		return res, nil
	}
	if err := tx.SendBatch(ctx, pb).Close(); err != nil {
		return res, fmt.Errorf("write accounts: %w", err)
	}
	return res, nil
}
