package accounts

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// ErrUnknownKey is returned for a key id that is not one of the account's
// keys: another account's key is unknown, exactly as a missing one.
var ErrUnknownKey = errors.New("unknown API key")

// ErrScopeNotHeld is returned when a key would hand out, or take away, a
// scope its holder lacks: a key issues only keys with scopes it holds
// itself (no escalation to admin), and revokes only keys whose scopes it
// holds (an orders-only key cannot switch off the account's admin key).
var ErrScopeNotHeld = errors.New("scope not held")

// Action is who acts and why. Every account and key action records it:
// the actor (the acting key's id, or "cli:<OS user>" for the command
// line) and the cause (the request id) in the event's metadata, the
// reason in its data.
type Action struct {
	Actor  string
	Reason string
	Cause  string
}

func (a Action) metadata(accountID string) eventstore.Metadata {
	return eventstore.Metadata{AccountID: accountID, CorrelationID: accountID, CausationID: a.Cause,
		Actor: cmpOr(a.Actor, "cli")}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// Key is an API key as its owner sees it: never the key or its hash.
type Key struct {
	KeyID string `json:"key_id"`
	// Prefix is the key's first, non-secret part ("aok_<id>"), what a
	// log or a leaked-secret scanner shows of it.
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	LastUsedAt *time.Time `json:"last_used_at"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
}

// Prefix returns the non-secret start of the key whose id is keyID.
func Prefix(keyID string) string { return "aok_" + strings.TrimPrefix(keyID, "key_") }

// IssuedKey is what IssueKey returns; APIKey is shown once, never stored.
type IssuedKey struct {
	AccountID string   `json:"account_id"`
	KeyID     string   `json:"key_id"`
	APIKey    string   `json:"api_key"`
	Scopes    []string `json:"scopes"`
}

func checkScopes(scopes []string) error {
	for _, sc := range scopes {
		if !slices.Contains(AllScopes, sc) {
			return fmt.Errorf("%w: unknown scope %q (valid: %s)", ErrInvalid, sc, strings.Join(AllScopes, ", "))
		}
	}
	return nil
}

// holds reports whether p may hand out or take away every scope:
// admin only when p holds admin itself, anything else when p holds it or
// admin.
func holds(p *Principal, scopes []string) error {
	if p == nil {
		return nil // the operator, on the command line
	}
	for _, sc := range scopes {
		if !p.Has(sc) {
			return fmt.Errorf("%w: this key lacks the %s scope", ErrScopeNotHeld, sc)
		}
	}
	return nil
}

// IssueKey issues a new API key for the account. issuer is the key that
// asks (nil for the operator): the new key's scopes must be ones it holds,
// and default to its own scopes. Admin is never a default: it must be
// asked for, so an admin key's or the operator's default is DefaultScopes.
func (s *Service) IssueKey(ctx context.Context, accountID string, scopes []string, issuer *Principal, act Action) (IssuedKey, error) {
	if len(scopes) == 0 {
		scopes = DefaultScopes
		if issuer != nil && !issuer.Has(ScopeAdmin) {
			scopes = issuer.Scopes
		}
	}
	scopes = slices.Compact(slices.Sorted(slices.Values(scopes)))
	if err := checkScopes(scopes); err != nil {
		return IssuedKey{}, err
	}
	if err := holds(issuer, scopes); err != nil {
		return IssuedKey{}, err
	}
	if len(scopes) == 0 {
		return IssuedKey{}, fmt.Errorf("%w: a key needs at least one scope", ErrInvalid)
	}
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return IssuedKey{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	keyID, key, hash, err := newKey()
	if err != nil {
		return IssuedKey{}, err
	}
	ev := domain.APIKeyIssued{KeyID: keyID, Scopes: scopes, Reason: act.Reason, At: s.now()}
	err = s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		if err := appendAccountEvent(ctx, tx, accountID, ev, act); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO api_keys (key_id, account_id, key_hash, scopes) VALUES ($1, $2, $3, $4)`,
			keyID, accountID, hash[:], scopes)
		return err
	})
	if err != nil {
		return IssuedKey{}, fmt.Errorf("issue key: %w", err)
	}
	return IssuedKey{AccountID: accountID, KeyID: keyID, APIKey: key, Scopes: scopes}, nil
}

// appendAccountEvent appends one event to the account's stream under the
// stream's row lock (the lock the writers that move money take too).
func appendAccountEvent(ctx context.Context, tx *eventstore.Tx, accountID string, ev domain.Event, act Action) error {
	var version int
	err := tx.QueryRow(ctx, `SELECT version FROM streams WHERE stream_id = $1 FOR UPDATE`, domain.AccountStream(accountID)).Scan(&version)
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("%w: %s", ErrUnknownAccount, accountID)
	}
	if err != nil {
		return err
	}
	_, err = tx.Append(ctx, eventstore.StreamAppend{Stream: domain.AccountStream(accountID), Expected: eventstore.Exact(version),
		Events: []eventstore.EventData{eventstore.MustEvent(ev, act.metadata(accountID))}})
	return err
}

const listKeysSQL = `-- name: list_keys
SELECT key_id, scopes, created_at, last_used_at, revoked_at FROM api_keys
WHERE account_id = $1 ORDER BY created_at, key_id`

// ListKeys returns the account's keys, oldest first, revoked ones
// included (with RevokedAt).
func (s *Service) ListKeys(ctx context.Context, accountID string) ([]Key, error) {
	rows, err := s.store.Pool().Query(ctx, listKeysSQL, accountID)
	if err != nil {
		return nil, err
	}
	keys, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Key, error) {
		var k Key
		err := row.Scan(&k.KeyID, &k.Scopes, &k.CreatedAt, &k.LastUsedAt, &k.RevokedAt)
		k.Prefix = Prefix(k.KeyID)
		k.CreatedAt = k.CreatedAt.UTC()
		for _, t := range []*time.Time{k.LastUsedAt, k.RevokedAt} {
			if t != nil {
				*t = t.UTC()
			}
		}
		return k, err
	})
	if err != nil {
		return nil, fmt.Errorf("list keys: %w", err)
	}
	return keys, nil
}

// RevokeKey revokes one of the account's keys: APIKeyRevoked on the
// account's stream and revoked_at on the key, in one transaction. The key
// stops working in this process at once and in every other within
// KeyCacheTTL (their caches expire; nothing else needs telling them).
// revoker is the key that asks (nil for the operator): it must hold
// every scope of the key it revokes. It may revoke itself. Revoking a
// revoked key changes nothing and is no error.
func (s *Service) RevokeKey(ctx context.Context, accountID, keyID string, revoker *Principal, act Action) error {
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		var scopes []string
		var revoked bool
		err := tx.QueryRow(ctx, `SELECT scopes, revoked_at IS NOT NULL FROM api_keys WHERE key_id = $1 AND account_id = $2 FOR UPDATE`,
			keyID, accountID).Scan(&scopes, &revoked)
		if errors.Is(err, pgx.ErrNoRows) {
			return fmt.Errorf("%w: %s", ErrUnknownKey, keyID)
		}
		if err != nil {
			return err
		}
		if err := holds(revoker, scopes); err != nil {
			return err
		}
		if revoked {
			return nil
		}
		if err := appendAccountEvent(ctx, tx, accountID, domain.APIKeyRevoked{KeyID: keyID, Reason: act.Reason, At: s.now()}, act); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE api_keys SET revoked_at = now() WHERE key_id = $1`, keyID)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke key: %w", err)
	}
	s.mu.Lock()
	for h, c := range s.cache {
		if c.p.KeyID == keyID {
			delete(s.cache, h)
		}
	}
	s.mu.Unlock()
	return nil
}

const notLiveKeysSQL = `-- name: not_live_keys
SELECT k FROM unnest($1::text[]) AS k
WHERE NOT EXISTS (SELECT 1 FROM api_keys WHERE key_id = k AND revoked_at IS NULL)`

// NotLive returns those of keyIDs that no longer authenticate (revoked,
// or unknown), in one primary-key probe each and one round trip for all,
// bypassing the cache: what holds a connection open on a key that
// authenticated once (the event streams) asks it every fraction of a
// second for all its keys together.
func (s *Service) NotLive(ctx context.Context, keyIDs []string) ([]string, error) {
	rows, err := s.store.Pool().Query(ctx, notLiveKeysSQL, keyIDs)
	if err != nil {
		return nil, fmt.Errorf("not live keys: %w", err)
	}
	gone, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("not live keys: %w", err)
	}
	return gone, nil
}

// KeyAccount returns the account a key belongs to (revoked or not), for
// the operator who names a key alone.
func (s *Service) KeyAccount(ctx context.Context, keyID string) (string, error) {
	var account string
	err := s.store.Pool().QueryRow(ctx, `SELECT account_id FROM api_keys WHERE key_id = $1`, keyID).Scan(&account)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("%w: %s", ErrUnknownKey, keyID)
	}
	return account, err
}
