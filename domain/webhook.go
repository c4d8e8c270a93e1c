package domain

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// A webhook endpoint is an account's status-callback target (README,
// "Status callbacks"). Its life is a stream of its own, webhook-<ULID>;
// the secret that signs its deliveries is never in an event (events go to JetStream, the
// SSE stream and replays), only in the webhook_secrets table.

// KindWebhook is the stream kind of webhook endpoints.
const KindWebhook = "webhook"

// WebhookStream is the stream of the webhook id.
func WebhookStream(id string) string { return KindWebhook + "-" + id }

// WebhookIDOf is the webhook id of a webhook stream.
func WebhookIDOf(stream string) (string, bool) { return idOf(stream, KindWebhook+"-") }

// ErrInvalidWebhook is returned for an endpoint that cannot be kept: a bad
// URL, an unknown event type, a too-long description.
var ErrInvalidWebhook = errors.New("invalid webhook endpoint")

// MaxWebhookDescription is the longest description kept, in characters.
const MaxWebhookDescription = 500

// WebhookEventTypes are the event types an endpoint may subscribe to, and
// its subscription when it names none: every order and message event.
func WebhookEventTypes() []string {
	return TypesOf(OrderAccepted{}, OrderCompleted{}, MessageAccepted{}, MessageQueued{}, MessageRouted{},
		MessageSubmitted{}, MessageDelivered{}, MessageFailed{}, MessageRetried{}, MessageCanceled{}, MessageRedriven{})
}

// WebhookEndpointCreated opens a webhook stream.
type WebhookEndpointCreated struct {
	WebhookID   string    `json:"webhook_id"`
	AccountID   string    `json:"account_id"`
	URL         string    `json:"url"`
	EventTypes  []string  `json:"event_types"`
	Description string    `json:"description,omitempty"`
	At          time.Time `json:"at"`
}

// WebhookEndpointUpdated carries the endpoint's whole new settings.
type WebhookEndpointUpdated struct {
	URL         string    `json:"url"`
	EventTypes  []string  `json:"event_types"`
	Description string    `json:"description,omitempty"`
	Enabled     bool      `json:"enabled"`
	Reason      string    `json:"reason,omitempty"`
	At          time.Time `json:"at"`
}

// WebhookSecretRotated records a new signing secret (kept in
// webhook_secrets, never here); the previous one keeps signing until
// PreviousExpiresAt.
type WebhookSecretRotated struct {
	PreviousExpiresAt time.Time `json:"previous_expires_at"`
	Reason            string    `json:"reason,omitempty"`
	At                time.Time `json:"at"`
}

// WebhookEndpointDisabled records that deliveries stopped: the receiver
// answered 410 Gone, or every attempt failed for too long. Reason is the
// endpoint's disabled_reason.
type WebhookEndpointDisabled struct {
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// WebhookEndpointDeleted closes a webhook stream.
type WebhookEndpointDeleted struct {
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
}

// WebhookReplayRequested records that events were queued again for the
// endpoint: those since Since, or those of EventIDs; Queued is how many.
type WebhookReplayRequested struct {
	Since    *time.Time `json:"since,omitempty"`
	EventIDs []string   `json:"event_ids,omitempty"`
	Queued   int        `json:"queued"`
	Reason   string     `json:"reason,omitempty"`
	At       time.Time  `json:"at"`
}

func (WebhookEndpointCreated) EventType() string  { return "WebhookEndpointCreated" }
func (WebhookEndpointUpdated) EventType() string  { return "WebhookEndpointUpdated" }
func (WebhookSecretRotated) EventType() string    { return "WebhookSecretRotated" }
func (WebhookEndpointDisabled) EventType() string { return "WebhookEndpointDisabled" }
func (WebhookEndpointDeleted) EventType() string  { return "WebhookEndpointDeleted" }
func (WebhookReplayRequested) EventType() string  { return "WebhookReplayRequested" }

func (WebhookEndpointCreated) SchemaVersion() int  { return 1 }
func (WebhookEndpointUpdated) SchemaVersion() int  { return 1 }
func (WebhookSecretRotated) SchemaVersion() int    { return 1 }
func (WebhookEndpointDisabled) SchemaVersion() int { return 1 }
func (WebhookEndpointDeleted) SchemaVersion() int  { return 1 }
func (WebhookReplayRequested) SchemaVersion() int  { return 1 }

// Webhook is an endpoint folded from its stream.
type Webhook struct {
	ID, AccountID  string
	URL            string
	EventTypes     []string
	Description    string
	Enabled        bool
	DisabledReason string
	Deleted        bool
	Version        int
}

// WebhookSettings are what a client sets on an endpoint.
type WebhookSettings struct {
	URL         string
	EventTypes  []string
	Description string
}

// CheckWebhookSettings checks the settings' shape and returns them
// normalised (event types sorted, defaulted to WebhookEventTypes). Whether
// the URL's host may be reached is the caller's (it needs DNS); here the
// URL must be absolute https (http only when allowHTTP), without
// credentials or a fragment.
func CheckWebhookSettings(s WebhookSettings, allowHTTP bool) (WebhookSettings, error) {
	u, err := url.Parse(s.URL)
	switch {
	case s.URL == "" || len(s.URL) > 2048:
		return s, fmt.Errorf("%w: url is required, at most 2048 bytes", ErrInvalidWebhook)
	case err != nil:
		return s, fmt.Errorf("%w: url: %v", ErrInvalidWebhook, err)
	case u.Scheme != "https" && !(allowHTTP && u.Scheme == "http"):
		return s, fmt.Errorf("%w: url must be https", ErrInvalidWebhook)
	case u.Host == "" || u.Hostname() == "":
		return s, fmt.Errorf("%w: url has no host", ErrInvalidWebhook)
	case u.User != nil:
		return s, fmt.Errorf("%w: url must not carry credentials", ErrInvalidWebhook)
	case u.Fragment != "":
		return s, fmt.Errorf("%w: url must not carry a fragment", ErrInvalidWebhook)
	}
	if !utf8.ValidString(s.Description) || utf8.RuneCountInString(s.Description) > MaxWebhookDescription ||
		strings.ContainsRune(s.Description, 0) {
		return s, fmt.Errorf("%w: description must be valid text of at most %d characters", ErrInvalidWebhook, MaxWebhookDescription)
	}
	valid := WebhookEventTypes()
	if len(s.EventTypes) == 0 {
		s.EventTypes = valid
	}
	for _, t := range s.EventTypes {
		if !slices.Contains(valid, t) {
			return s, fmt.Errorf("%w: unknown event type %q (valid: %s)", ErrInvalidWebhook, t, strings.Join(valid, ", "))
		}
	}
	s.EventTypes = slices.Compact(slices.Sorted(slices.Values(s.EventTypes)))
	return s, nil
}

// Apply folds one of the endpoint's events.
func (w *Webhook) Apply(e Event) error {
	if w.Deleted {
		return fmt.Errorf("%w: %s after the endpoint was deleted", ErrIllegalTransition, e.EventType())
	}
	switch e := e.(type) {
	case WebhookEndpointCreated:
		if w.Version != 0 {
			return fmt.Errorf("%w: created twice", ErrIllegalTransition)
		}
		w.ID, w.AccountID, w.URL, w.EventTypes, w.Description, w.Enabled = e.WebhookID, e.AccountID, e.URL, e.EventTypes, e.Description, true
	case WebhookEndpointUpdated:
		w.URL, w.EventTypes, w.Description = e.URL, e.EventTypes, e.Description
		if e.Enabled && !w.Enabled {
			w.DisabledReason = ""
		}
		w.Enabled = e.Enabled
	case WebhookEndpointDisabled:
		w.Enabled, w.DisabledReason = false, e.Reason
	case WebhookEndpointDeleted:
		w.Deleted = true
	case WebhookSecretRotated, WebhookReplayRequested:
	default:
		return fmt.Errorf("%w: %s on a webhook stream", ErrIllegalTransition, e.EventType())
	}
	if w.Version == 0 {
		if _, ok := e.(WebhookEndpointCreated); !ok {
			return fmt.Errorf("%w: %s before the endpoint was created", ErrIllegalTransition, e.EventType())
		}
	}
	w.Version++
	return nil
}

// Disable stops deliveries with the reason; an endpoint already disabled
// is not disabled again (ok false).
func (w *Webhook) Disable(reason string, at time.Time) (WebhookEndpointDisabled, bool) {
	if !w.Enabled || w.Deleted {
		return WebhookEndpointDisabled{}, false
	}
	return WebhookEndpointDisabled{Reason: reason, At: at}, true
}
