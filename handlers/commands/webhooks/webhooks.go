// Package webhooks owns an account's status-callback endpoints: create,
// change, rotate the secret, disable, delete, replay, and the attempt log
// (README, "Status callbacks"). Every change is an event on the endpoint's own stream
// (webhook-<id>), with the acting key as actor, written in one
// transaction with the endpoint's row in webhook_endpoints; secrets live
// in webhook_secrets only, never in an event or a log line.
//
// Sending is handlers/workers/callbacks'.
package webhooks

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// ErrNotFound: no such endpoint, a deleted one, or another account's.
var ErrNotFound = errors.New("no such webhook endpoint")

// Config configures the Service.
type Config struct {
	Guard Guard
	// RotationOverlap is how long a rotated-out secret keeps signing
	// (default 24 h).
	RotationOverlap time.Duration
	Now             func() time.Time
}

// Service manages endpoints.
type Service struct {
	store *eventstore.Store
	cfg   Config
}

// New returns a Service.
func New(store *eventstore.Store, cfg Config) *Service {
	if cfg.RotationOverlap <= 0 {
		cfg.RotationOverlap = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{store: store, cfg: cfg}
}

// Endpoint is an endpoint as its owner sees it: never its secret.
type Endpoint struct {
	WebhookID      string
	AccountID      string
	URL            string
	EventTypes     []string
	Description    string
	Enabled        bool
	DisabledReason string
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Created is a new endpoint and its secret, shown this once.
type Created struct {
	Endpoint
	Secret string
}

// secretBytes is the random part of a secret: 32 bytes, above the 24 the
// contract asks for.
const secretBytes = 32

func newSecret() (string, error) {
	b := make([]byte, secretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(b), nil
}

func metadata(accountID, webhookID string, act accounts.Action) eventstore.Metadata {
	actor := act.Actor
	if actor == "" {
		actor = "cli"
	}
	return eventstore.Metadata{AccountID: accountID, CorrelationID: webhookID, CausationID: act.Cause, Actor: actor}
}

func (s *Service) checkSettings(ctx context.Context, set domain.WebhookSettings) (domain.WebhookSettings, error) {
	set, err := domain.CheckWebhookSettings(set, s.cfg.Guard.AllowPrivate)
	if err != nil {
		return set, err
	}
	return set, s.cfg.Guard.CheckURL(ctx, set.URL)
}

// Create opens an endpoint for the account: WebhookEndpointCreated, its
// row and its first secret, in one transaction.
func (s *Service) Create(ctx context.Context, accountID string, set domain.WebhookSettings, act accounts.Action) (Created, error) {
	set, err := s.checkSettings(ctx, set)
	if err != nil {
		return Created{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return Created{}, err
	}
	now := s.cfg.Now().UTC()
	id := ulid.Make().String()
	ev := domain.WebhookEndpointCreated{WebhookID: id, AccountID: accountID, URL: set.URL, EventTypes: set.EventTypes,
		Description: set.Description, At: now}
	err = s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		if _, err := tx.Append(ctx, eventstore.StreamAppend{Stream: domain.WebhookStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(ev, metadata(accountID, id, act))}}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `INSERT INTO webhook_endpoints (webhook_id, account_id, url, event_types, description, created_at, updated_at)
VALUES ($1, $2, $3, $4, $5, $6, $6)`, id, accountID, set.URL, set.EventTypes, set.Description, now); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO webhook_secrets (webhook_id, secret, created_at) VALUES ($1, $2, $3)`, id, secret, now)
		return err
	})
	if err != nil {
		return Created{}, fmt.Errorf("create webhook: %w", err)
	}
	return Created{Endpoint: Endpoint{WebhookID: id, AccountID: accountID, URL: set.URL, EventTypes: set.EventTypes,
		Description: set.Description, Enabled: true, CreatedAt: now, UpdatedAt: now}, Secret: secret}, nil
}

const endpointColumns = `webhook_id, account_id, url, event_types, description, enabled, coalesce(disabled_reason, ''), created_at, updated_at`

func scanEndpoint(row pgx.Row) (Endpoint, error) {
	var e Endpoint
	err := row.Scan(&e.WebhookID, &e.AccountID, &e.URL, &e.EventTypes, &e.Description, &e.Enabled, &e.DisabledReason, &e.CreatedAt, &e.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return e, ErrNotFound
	}
	e.CreatedAt, e.UpdatedAt = e.CreatedAt.UTC(), e.UpdatedAt.UTC()
	return e, err
}

// Get returns one of the account's endpoints.
func (s *Service) Get(ctx context.Context, accountID, id string) (Endpoint, error) {
	e, err := scanEndpoint(s.store.Pool().QueryRow(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
WHERE webhook_id = $1 AND account_id = $2 AND deleted_at IS NULL`, id, accountID))
	if err != nil {
		return e, fmt.Errorf("webhook %s: %w", id, err)
	}
	return e, nil
}

// List returns a page of the account's endpoints, oldest first; next is
// the cursor of the following page ("" at the end).
func (s *Service) List(ctx context.Context, accountID string, limit int, cursor string) ([]Endpoint, string, error) {
	after := ""
	if cursor != "" {
		if _, err := ulid.ParseStrict(cursor); err != nil {
			return nil, "", fmt.Errorf("%w: bad cursor", accounts.ErrInvalid)
		}
		after = cursor
	}
	rows, err := s.store.Pool().Query(ctx, `SELECT `+endpointColumns+` FROM webhook_endpoints
WHERE account_id = $1 AND deleted_at IS NULL AND webhook_id > $2 ORDER BY webhook_id LIMIT $3`, accountID, after, limit+1)
	if err != nil {
		return nil, "", err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Endpoint, error) { return scanEndpoint(r) })
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].WebhookID
	}
	return out, next, nil
}

// load reads the endpoint under its row lock, as its stream folds it.
func load(ctx context.Context, tx *eventstore.Tx, accountID, id string) (domain.Webhook, error) {
	var w domain.Webhook
	if _, err := ulid.ParseStrict(id); err != nil {
		return w, fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	var owner string
	err := tx.QueryRow(ctx, `SELECT account_id FROM webhook_endpoints WHERE webhook_id = $1 AND deleted_at IS NULL FOR UPDATE`, id).Scan(&owner)
	if errors.Is(err, pgx.ErrNoRows) || err == nil && owner != accountID && accountID != "" {
		return w, fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return w, err
	}
	recs, err := eventstore.ReadStream(ctx, tx, domain.WebhookStream(id), 1)
	if err != nil {
		return w, err
	}
	evs, err := eventstore.DecodeAll(recs)
	if err != nil {
		return w, err
	}
	for _, e := range evs {
		if err := w.Apply(e); err != nil {
			return w, err
		}
	}
	return w, nil
}

func appendTo(ctx context.Context, tx *eventstore.Tx, w domain.Webhook, ev domain.Event, act accounts.Action) error {
	_, err := tx.Append(ctx, eventstore.StreamAppend{Stream: domain.WebhookStream(w.ID), Expected: eventstore.Exact(w.Version),
		Events: []eventstore.EventData{eventstore.MustEvent(ev, metadata(w.AccountID, w.ID, act))}})
	return err
}

// Change is what an update sets; nil fields stay as they are.
type Change struct {
	URL         *string
	EventTypes  []string // nil: unchanged
	Description *string
	Enabled     *bool
}

// Update changes an endpoint's settings: WebhookEndpointUpdated with the
// whole new settings. Enabling a disabled endpoint clears its
// disabled_reason and its run of failures.
func (s *Service) Update(ctx context.Context, accountID, id string, ch Change, act accounts.Action) (Endpoint, error) {
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return Endpoint{}, err
	}
	var out Endpoint
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		w, err := load(ctx, tx, accountID, id)
		if err != nil {
			return err
		}
		set := domain.WebhookSettings{URL: w.URL, EventTypes: w.EventTypes, Description: w.Description}
		enabled := w.Enabled
		if ch.URL != nil {
			set.URL = *ch.URL
		}
		if ch.EventTypes != nil {
			if len(ch.EventTypes) == 0 {
				return fmt.Errorf("%w: event_types must not be empty", domain.ErrInvalidWebhook)
			}
			set.EventTypes = ch.EventTypes
		}
		if ch.Description != nil {
			set.Description = *ch.Description
		}
		if ch.Enabled != nil {
			enabled = *ch.Enabled
		}
		if set, err = s.checkSettings(ctx, set); err != nil {
			return err
		}
		now := s.cfg.Now().UTC()
		ev := domain.WebhookEndpointUpdated{URL: set.URL, EventTypes: set.EventTypes, Description: set.Description, Enabled: enabled,
			Reason: act.Reason, At: now}
		if err := appendTo(ctx, tx, w, ev, act); err != nil {
			return err
		}
		if enabled != w.Enabled {
			if err := park(ctx, tx, id, enabled); err != nil {
				return err
			}
		}
		out, err = scanEndpoint(tx.QueryRow(ctx, `UPDATE webhook_endpoints SET url = $2, event_types = $3, description = $4, enabled = $5,
  disabled_reason = CASE WHEN $5 THEN NULL ELSE disabled_reason END,
  failing_since = CASE WHEN $5 AND NOT enabled THEN NULL ELSE failing_since END, updated_at = $6
WHERE webhook_id = $1 RETURNING `+endpointColumns, id, set.URL, set.EventTypes, set.Description, enabled, now))
		return err
	})
	if err != nil {
		return Endpoint{}, fmt.Errorf("update webhook: %w", err)
	}
	return out, nil
}

// Delete deletes an endpoint: WebhookEndpointDeleted; its secrets and
// the deliveries it is still owed go, its attempt log stays (until the
// janitor's retention).
func (s *Service) Delete(ctx context.Context, accountID, id string, act accounts.Action) error {
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return err
	}
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		w, err := load(ctx, tx, accountID, id)
		if err != nil {
			return err
		}
		now := s.cfg.Now().UTC()
		if err := appendTo(ctx, tx, w, domain.WebhookEndpointDeleted{Reason: act.Reason, At: now}, act); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoints SET deleted_at = $2, enabled = false, updated_at = $2 WHERE webhook_id = $1`, id, now); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM webhook_secrets WHERE webhook_id = $1`, id); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `DELETE FROM webhook_deliveries WHERE webhook_id = $1`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete webhook: %w", err)
	}
	return nil
}

// RotateSecret gives the endpoint a new secret and returns it: the
// secrets still live keep signing until now + RotationOverlap, so a
// receiver that has not switched yet keeps verifying.
func (s *Service) RotateSecret(ctx context.Context, accountID, id string, act accounts.Action) (string, time.Time, error) {
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return "", time.Time{}, err
	}
	secret, err := newSecret()
	if err != nil {
		return "", time.Time{}, err
	}
	now := s.cfg.Now().UTC()
	expires := now.Add(s.cfg.RotationOverlap)
	err = s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		w, err := load(ctx, tx, accountID, id)
		if err != nil {
			return err
		}
		if err := appendTo(ctx, tx, w, domain.WebhookSecretRotated{PreviousExpiresAt: expires, Reason: act.Reason, At: now}, act); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_secrets SET expires_at = LEAST(coalesce(expires_at, $2), $2) WHERE webhook_id = $1`, id, expires); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `INSERT INTO webhook_secrets (webhook_id, secret, created_at) VALUES ($1, $2, $3)`, id, secret, now)
		return err
	})
	if err != nil {
		return "", time.Time{}, fmt.Errorf("rotate webhook secret: %w", err)
	}
	return secret, expires, nil
}

// Disable stops deliveries to an endpoint, for the deliverer (410 Gone,
// the long-failure rule): WebhookEndpointDisabled with the reason, which
// becomes the endpoint's disabled_reason. An endpoint disabled, deleted
// or gone already is left alone (false).
func (s *Service) Disable(ctx context.Context, id, reason, actor string) (bool, error) {
	disabled := false
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		w, err := load(ctx, tx, "", id)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		now := s.cfg.Now().UTC()
		ev, ok := w.Disable(reason, now)
		if !ok {
			return nil
		}
		if err := appendTo(ctx, tx, w, ev, accounts.Action{Actor: actor}); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2, updated_at = $3 WHERE webhook_id = $1`, id, reason, now); err != nil {
			return err
		}
		if err := park(ctx, tx, id, false); err != nil {
			return err
		}
		disabled = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("disable webhook %s: %w", id, err)
	}
	return disabled, nil
}

// park takes a disabled endpoint's deliveries out of the sender's due
// scan (next_attempt_at = infinity), or, when it is enabled again, makes
// them due at once: they are kept, not dropped, while it is disabled.
func park(ctx context.Context, tx *eventstore.Tx, id string, enabled bool) error {
	q := `UPDATE webhook_deliveries SET next_attempt_at = 'infinity' WHERE webhook_id = $1`
	if enabled {
		q = `UPDATE webhook_deliveries SET next_attempt_at = now() WHERE webhook_id = $1 AND next_attempt_at = 'infinity'`
	}
	_, err := tx.Exec(ctx, q, id)
	return err
}

// MaxReplay bounds the events one replay queues.
const MaxReplay = 100_000

// Replay queues events again for the endpoint: the account's events of
// the endpoint's types recorded since, or those of eventIDs (of the
// account; others are not found and not counted). An event still owed
// to the endpoint is not queued twice. It returns how many were queued,
// recorded as WebhookReplayRequested.
func (s *Service) Replay(ctx context.Context, accountID, id string, since *time.Time, eventIDs []string, act accounts.Action) (int, error) {
	if err := domain.CheckReason(act.Reason, false); err != nil {
		return 0, err
	}
	switch {
	case since == nil && len(eventIDs) == 0, since != nil && len(eventIDs) > 0:
		return 0, fmt.Errorf("%w: give since or event_ids, one of them", accounts.ErrInvalid)
	case len(eventIDs) > 1000:
		return 0, fmt.Errorf("%w: at most 1000 event_ids", accounts.ErrInvalid)
	}
	for _, e := range eventIDs {
		if len(e) != 36 || strings.Count(e, "-") != 4 {
			return 0, fmt.Errorf("%w: event_ids: %q is not an event id", accounts.ErrInvalid, e)
		}
	}
	queued := 0
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		w, err := load(ctx, tx, accountID, id)
		if err != nil {
			return err
		}
		// The first of a stream is ready when nothing of it is owed; a
		// race with a recorder is caught by the deliverer's orphan check.
		const insert = `INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, next_attempt_at, ready)
SELECT $1, r.stream_id, r.global_position, r.event_id, r.type, now(),
  r.rn = 1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries x WHERE x.webhook_id = $1 AND x.stream_id = r.stream_id)
FROM (SELECT e.stream_id, e.global_position, e.event_id, e.type,
             row_number() OVER (PARTITION BY e.stream_id ORDER BY e.global_position) AS rn FROM events e `
		var tag interface{ RowsAffected() int64 }
		if since != nil {
			tag, err = tx.Exec(ctx, insert+`WHERE e.account_id = $2 AND e.type = ANY($3) AND e.recorded_at >= $4
ORDER BY e.global_position LIMIT $5) r ON CONFLICT DO NOTHING`, id, accountID, w.EventTypes, *since, MaxReplay)
		} else {
			tag, err = tx.Exec(ctx, insert+`WHERE e.account_id = $2 AND e.type = ANY($3) AND e.event_id = ANY($4::uuid[])) r
ON CONFLICT DO NOTHING`, id, accountID, w.EventTypes, eventIDs)
		}
		if err != nil {
			return err
		}
		queued = int(tag.RowsAffected())
		ev := domain.WebhookReplayRequested{Since: since, EventIDs: eventIDs, Queued: queued, Reason: act.Reason, At: s.cfg.Now().UTC()}
		return appendTo(ctx, tx, w, ev, act)
	})
	if err != nil {
		return 0, fmt.Errorf("replay webhook: %w", err)
	}
	return queued, nil
}
