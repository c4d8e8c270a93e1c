// Package accounts opens accounts, issues API keys and authenticates them,
// and loads an account's current balances for the writers that move money
// (order acceptance and the order tracker). Only a key's SHA-256 is stored.
package accounts

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// Scopes an API key can carry.
const (
	ScopeOrdersWrite  = "orders:write"
	ScopeMessagesRead = "messages:read"
	ScopeEventsRead   = "events:read"
	// ScopeMessagesWrite allows acting on messages after acceptance:
	// cancel and re-drive.
	ScopeMessagesWrite = "messages:write"
	// ScopeWebhooksManage allows creating, changing and replaying the
	// account's status-callback endpoints.
	ScopeWebhooksManage = "webhooks:manage"
	// ScopeKeysManage allows listing, issuing and revoking the account's
	// API keys (within the scopes the key holds itself). Without it a
	// leaked key could issue itself a successor that outlives its
	// revocation.
	ScopeKeysManage = "keys:manage"
	ScopeAdmin      = "admin"
)

// DefaultScopes are what a new account's first key gets: every scope but admin.
var DefaultScopes = []string{ScopeOrdersWrite, ScopeMessagesRead, ScopeEventsRead, ScopeMessagesWrite, ScopeWebhooksManage, ScopeKeysManage}

// AllScopes lists every valid scope.
var AllScopes = append(slices.Clone(DefaultScopes), ScopeAdmin)

// ErrUnauthenticated is returned for a missing, malformed, unknown or revoked key.
var ErrUnauthenticated = errors.New("unauthenticated")

// ErrUnknownAccount is returned when an account stream does not exist.
var ErrUnknownAccount = errors.New("unknown account")

// ErrInvalid is returned for a request the service cannot act on as
// given: an unknown scope, an account without a name, a bad reason.
var ErrInvalid = errors.New("invalid request")

// ErrUnservedCurrency is returned by Create for an account in a currency
// no price table of this deployment serves: every order of it would fail
// to price, so it is refused when it is opened, not at its first order.
var ErrUnservedCurrency = errors.New("no price table serves this currency")

// Principal is the authenticated execution context of a request.
type Principal struct {
	AccountID string
	KeyID     string
	Scopes    []string
}

// Has reports whether the principal holds scope (admin holds every scope).
func (p Principal) Has(scope string) bool {
	return slices.Contains(p.Scopes, scope) || slices.Contains(p.Scopes, ScopeAdmin)
}

// Service opens accounts and authenticates keys.
type Service struct {
	store *eventstore.Store
	now   func() time.Time

	// A short-lived cache of successful authentications (KeyCacheTTL):
	// every API request authenticates, and a hot key costs one api_keys
	// query a second instead of one per request. Bounded by the number of
	// live keys. The policies change more rarely and matter less (policyTTL).
	mu        sync.Mutex
	cache     map[[32]byte]cached
	policies  map[string]cachedPolicy
	keyTTL    time.Duration
	policyTTL time.Duration
	// currencies are those an account may be opened in; empty: any.
	currencies []string
	// creditKeyTTL is how long a credit's Idempotency-Key is remembered.
	creditKeyTTL time.Duration
}

// Option configures a Service.
type Option func(*Service)

// Currencies limits the accounts Create opens to these currencies: the
// ones the deployment's price table prices in.
func Currencies(codes ...string) Option {
	return func(s *Service) { s.currencies = append(s.currencies, codes...) }
}

// KeyCacheTTL bounds how long a key revoked in the database (revoked_at
// set) keeps working in a process that authenticated it just before: the
// contract refuses a revoked key everywhere within a second, and nothing
// tells other processes about a revocation, so the cache may not be older.
const KeyCacheTTL = time.Second

// policyTTL is how long an account's validation policy is cached.
const policyTTL = 30 * time.Second

type cachedPolicy struct {
	a       domain.Account
	expires time.Time
}

type cached struct {
	p       Principal
	expires time.Time
}

// New returns a Service.
func New(store *eventstore.Store, now func() time.Time, opts ...Option) *Service {
	s := &Service{store: store, now: now, cache: map[[32]byte]cached{}, policies: map[string]cachedPolicy{},
		keyTTL: KeyCacheTTL, policyTTL: policyTTL, creditKeyTTL: defaultIdempotencyTTL}
	for _, o := range opts {
		o(s)
	}
	return s
}

// DefaultCurrency is the currency an account is opened in when none is
// named: the first the deployment's price table serves ("" when any may be
// opened, then one must be named).
func (s *Service) DefaultCurrency() string {
	if len(s.currencies) == 0 {
		return ""
	}
	return s.currencies[0]
}

// Created is what Create returns; APIKey is shown once and never stored.
type Created struct {
	AccountID string       `json:"account_id"`
	Name      string       `json:"name"`
	KeyID     string       `json:"key_id"`
	APIKey    string       `json:"api_key"`
	Scopes    []string     `json:"scopes"`
	Balance   domain.Money `json:"balance"`
}

// NewAccount describes an account to open.
type NewAccount struct {
	Name             string
	Credit           domain.Money
	Scopes           []string // default DefaultScopes
	AllowedCountries []string // empty = all
	// Action is who opens it and why (default actor: "cli").
	Action Action
}

// Create opens an account with its opening credit and issues its first API
// key, in one transaction.
func (s *Service) Create(ctx context.Context, req NewAccount) (Created, error) {
	if len(req.Scopes) == 0 {
		req.Scopes = DefaultScopes
	}
	if err := checkScopes(req.Scopes); err != nil {
		return Created{}, err
	}
	if strings.TrimSpace(req.Name) == "" {
		return Created{}, fmt.Errorf("%w: an account needs a name", ErrInvalid)
	}
	if err := domain.CheckReason(req.Name, true); err != nil {
		return Created{}, fmt.Errorf("%w: the name: %v", ErrInvalid, strings.TrimPrefix(err.Error(), domain.ErrInvalidReason.Error()+": "))
	}
	if err := domain.CheckReason(req.Action.Reason, false); err != nil {
		return Created{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	for _, c := range req.AllowedCountries {
		if len(c) != 2 || c[0] < 'A' || c[0] > 'Z' || c[1] < 'A' || c[1] > 'Z' {
			return Created{}, fmt.Errorf("%w: country %q is not an ISO 3166 alpha-2 code", ErrInvalid, c)
		}
	}
	if len(s.currencies) > 0 && !slices.Contains(s.currencies, req.Credit.Currency) {
		return Created{}, fmt.Errorf("%w: %q (served: %s)", ErrUnservedCurrency, req.Credit.Currency, strings.Join(s.currencies, ", "))
	}
	now := s.now()
	id := ulid.Make().String()
	opened, err := domain.OpenAccount(id, req.Name, req.Credit.Currency, req.AllowedCountries, now)
	if err != nil {
		return Created{}, err
	}
	a := domain.Account{}
	if err := a.Apply(opened); err != nil {
		return Created{}, err
	}
	credited, err := a.Credit(req.Credit, "opening credit", now)
	if err != nil {
		return Created{}, err
	}
	keyID, key, hash, err := newKey()
	if err != nil {
		return Created{}, err
	}
	md := req.Action.metadata(id)
	events := []eventstore.EventData{
		eventstore.MustEvent(opened, md),
		eventstore.MustEvent(credited, md),
		eventstore.MustEvent(domain.APIKeyIssued{KeyID: keyID, Scopes: req.Scopes, Reason: req.Action.Reason, At: now}, md),
	}
	err = s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		if _, err := tx.Append(ctx, eventstore.StreamAppend{Stream: domain.AccountStream(id), Expected: eventstore.NoStream, Events: events}); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (key_id, account_id, key_hash, scopes) VALUES ($1, $2, $3, $4)`,
			keyID, id, hash[:], req.Scopes)
		return err
	})
	if err != nil {
		return Created{}, fmt.Errorf("create account: %w", err)
	}
	return Created{AccountID: id, Name: req.Name, KeyID: keyID, APIKey: key, Scopes: req.Scopes, Balance: req.Credit}, nil
}

// newKey returns a key "aok_<key id>_<secret>": the id makes a key
// recognisable in logs (it is also the actor in event metadata); the 256-bit
// secret makes it unguessable.
func newKey() (keyID, key string, hash [32]byte, err error) {
	secret := make([]byte, 32)
	if _, err = rand.Read(secret); err != nil {
		return "", "", hash, err
	}
	keyID = "key_" + strings.ToLower(ulid.Make().String())
	key = "aok_" + keyID[len("key_"):] + "_" + base64.RawURLEncoding.EncodeToString(secret)
	return keyID, key, sha256.Sum256([]byte(key)), nil
}

const (
	// authenticateSQL finds a live key by its hash and says whether its
	// last_used_at is older than a minute.
	authenticateSQL = `-- name: authenticate
SELECT key_id, account_id, scopes, last_used_at IS NULL OR last_used_at < now() - interval '1 minute'
FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL`
	// touchKeySQL stamps last_used_at unless another process just did.
	touchKeySQL = `-- name: touch_key
UPDATE api_keys SET last_used_at = now()
WHERE key_id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`
)

// Authenticate resolves an API key to its principal.
//
// What a request costs: nothing in the database while the process has the
// key cached (KeyCacheTTL); one indexed lookup a second per key and
// process otherwise; and at most once a minute per key, one UPDATE of
// last_used_at. The key list's last_used_at is therefore precise to about
// a minute, and no request writes on the hot path.
func (s *Service) Authenticate(ctx context.Context, key string) (Principal, error) {
	if !strings.HasPrefix(key, "aok_") || len(key) > 200 {
		return Principal{}, ErrUnauthenticated
	}
	h := sha256.Sum256([]byte(key))
	now := s.now()
	s.mu.Lock()
	c, ok := s.cache[h]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.p, nil
	}
	var p Principal
	var stale bool
	err := s.store.Pool().QueryRow(ctx, authenticateSQL, h[:]).Scan(&p.KeyID, &p.AccountID, &p.Scopes, &stale)
	if errors.Is(err, pgx.ErrNoRows) {
		return Principal{}, ErrUnauthenticated
	}
	if err != nil {
		return Principal{}, fmt.Errorf("authenticate: %w", err)
	}
	if stale {
		// Best effort: a failed stamp costs the key list a minute of
		// precision, which is no reason to refuse the request.
		_, _ = s.store.Pool().Exec(ctx, touchKeySQL, p.KeyID)
	}
	s.mu.Lock()
	if len(s.cache) > 10_000 {
		clear(s.cache) // bounded: a flood of distinct valid keys only costs lookups
	}
	s.cache[h] = cached{p: p, expires: now.Add(s.keyTTL)}
	s.mu.Unlock()
	return p, nil
}

// Policy returns what validation needs of an account (currency, allowed
// countries), cached like authentications: it changes rarely, and reading
// it from the store on every order would cost two queries per request.
// The balance in it is NOT current; only LoadForUpdate's is.
func (s *Service) Policy(ctx context.Context, accountID string) (domain.Account, error) {
	now := s.now()
	s.mu.Lock()
	c, ok := s.policies[accountID]
	s.mu.Unlock()
	if ok && now.Before(c.expires) {
		return c.a, nil
	}
	a, err := Load(ctx, s.store.Pool(), accountID)
	if err != nil {
		return a, err
	}
	s.mu.Lock()
	if len(s.policies) > 10_000 {
		clear(s.policies)
	}
	s.policies[accountID] = cachedPolicy{a: a, expires: now.Add(s.policyTTL)}
	s.mu.Unlock()
	return a, nil
}

const loadAccountSQL = `SELECT stream_version, type, schema_version, data FROM events
WHERE stream_id = $1 AND stream_version = 1
UNION ALL
(SELECT stream_version, type, schema_version, data FROM events
  WHERE stream_id = $1 AND type IN ('AccountCredited', 'BalanceCredited', 'BalanceReserved', 'BalanceCharged', 'BalanceReleased')
  ORDER BY stream_version DESC LIMIT 1)`

// LoadForUpdate locks the account's stream row for the rest of tx and
// returns the account's current position: concurrent writers that move the
// same account's money queue here instead of overdrawing it. It reads two
// events (the opening one and the latest money event, which records the
// balances) instead of folding the whole history.
func LoadForUpdate(ctx context.Context, tx pgx.Tx, accountID string) (domain.Account, error) {
	stream := domain.AccountStream(accountID)
	var version int
	err := tx.QueryRow(ctx, `SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE`, stream).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Account{}, fmt.Errorf("%w: %s", ErrUnknownAccount, accountID)
	}
	if err != nil {
		return domain.Account{}, fmt.Errorf("lock account %s: %w", accountID, err)
	}
	return load(ctx, tx, stream, version)
}

// Load returns the account's current position without locking it.
func Load(ctx context.Context, q eventstore.Querier, accountID string) (domain.Account, error) {
	stream := domain.AccountStream(accountID)
	rows, err := q.Query(ctx, `SELECT version FROM streams WHERE stream_id = $1`, stream)
	if err != nil {
		return domain.Account{}, err
	}
	version, err := pgx.CollectExactlyOneRow(rows, pgx.RowTo[int])
	if errors.Is(err, pgx.ErrNoRows) {
		return domain.Account{}, fmt.Errorf("%w: %s", ErrUnknownAccount, accountID)
	}
	if err != nil {
		return domain.Account{}, err
	}
	return load(ctx, q, stream, version)
}

func load(ctx context.Context, q eventstore.Querier, stream string, version int) (domain.Account, error) {
	rows, err := q.Query(ctx, loadAccountSQL, stream)
	if err != nil {
		return domain.Account{}, fmt.Errorf("load %s: %w", stream, err)
	}
	defer rows.Close()
	var opened *domain.AccountOpened
	var latest *domain.Balances
	for rows.Next() {
		var v, schema int
		var typ string
		var data []byte
		if err := rows.Scan(&v, &typ, &schema, &data); err != nil {
			return domain.Account{}, err
		}
		e, err := domain.Decode(typ, schema, data)
		if err != nil {
			return domain.Account{}, err
		}
		if o, ok := e.(domain.AccountOpened); ok && v == 1 {
			opened = &o
		} else if b, ok := domain.MoneyBalances(e); ok {
			latest = &b
		}
	}
	if err := rows.Err(); err != nil {
		return domain.Account{}, err
	}
	if opened == nil {
		return domain.Account{}, fmt.Errorf("%w: %s has no AccountOpened", ErrUnknownAccount, stream)
	}
	return domain.RestoreAccount(*opened, latest, version), nil
}
