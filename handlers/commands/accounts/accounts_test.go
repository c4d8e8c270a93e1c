package accounts_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

func TestCreateAuthenticateLoad(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	svc := accounts.New(store, time.Now)

	c, err := svc.Create(ctx, accounts.NewAccount{Name: "Acme", Credit: domain.Money{AmountMicros: 5_000_000, Currency: "EUR"}})
	require.NoError(t, err)
	require.True(t, strings.HasPrefix(c.APIKey, "aok_"))

	var stored int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE key_hash = sha256(convert_to($1, 'UTF8'))`, c.APIKey).Scan(&stored))
	require.Equal(t, 1, stored, "the key's SHA-256 is stored")
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT count(*) FROM api_keys WHERE position($1 in encode(key_hash, 'escape')) > 0
		OR EXISTS (SELECT 1 FROM events WHERE data::text LIKE '%' || $1 || '%')`, c.APIKey[len(c.APIKey)-20:]).Scan(&stored))
	require.Zero(t, stored, "the key itself is stored nowhere")

	p, err := svc.Authenticate(ctx, c.APIKey)
	require.NoError(t, err)
	require.Equal(t, c.AccountID, p.AccountID)
	require.True(t, p.Has(accounts.ScopeOrdersWrite))
	require.False(t, p.Has(accounts.ScopeAdmin))

	for _, bad := range []string{"", "aok_", c.APIKey + "x", "Bearer " + c.APIKey, strings.Replace(c.APIKey, "aok_", "aok_0", 1)} {
		_, err := svc.Authenticate(ctx, bad)
		require.ErrorIs(t, err, accounts.ErrUnauthenticated, bad)
	}

	a, err := accounts.Load(ctx, db.Pool, c.AccountID)
	require.NoError(t, err)
	require.Equal(t, int64(5_000_000), a.Balance)
	require.Equal(t, "EUR", a.Currency)
	require.Equal(t, 3, a.Version)

	_, err = accounts.Load(ctx, db.Pool, "nope")
	require.ErrorIs(t, err, accounts.ErrUnknownAccount)

	_, err = svc.Create(ctx, accounts.NewAccount{Name: "x", Credit: domain.Money{AmountMicros: 1, Currency: "EUR"}, Scopes: []string{"root"}})
	require.Error(t, err)
	_, err = svc.Create(ctx, accounts.NewAccount{Name: "x", Credit: domain.Money{AmountMicros: -1, Currency: "EUR"}})
	require.Error(t, err)
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// TestCreateRefusesAnUnservedCurrency: an account in a currency no price
// table serves could never pay for an order; it is refused when opened,
// and nothing of it is written.
func TestCreateRefusesAnUnservedCurrency(t *testing.T) {
	ctx := context.Background()
	db := storetest.NewDB(t)
	svc := accounts.New(eventstore.New(db.Pool), time.Now, accounts.Currencies("EUR"))

	_, err := svc.Create(ctx, accounts.NewAccount{Name: "Acme", Credit: domain.Money{AmountMicros: 5_000_000, Currency: "USD"}})
	require.ErrorIs(t, err, accounts.ErrUnservedCurrency)
	var events, keys int
	require.NoError(t, db.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM api_keys)`).Scan(&events, &keys))
	require.Zero(t, events+keys, "a refused account wrote something")

	_, err = svc.Create(ctx, accounts.NewAccount{Name: "Acme", Credit: domain.Money{AmountMicros: 5_000_000, Currency: "EUR"}})
	require.NoError(t, err)
}
