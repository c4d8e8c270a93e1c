package api

import (
	"errors"
	"net/http"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/webhooks"
)

// Status-callback endpoints (scope webhooks:manage, README "Status callbacks"). The
// work is handlers/commands/webhooks'; the secret is in the body of
// create and rotate-secret only. Another account's endpoint is 404.

func (s *Server) webhookRoutes() []Route {
	sc := accounts.ScopeWebhooksManage
	return []Route{
		{Method: "POST", Pattern: "/v1/webhooks", Scope: sc, Handle: s.createWebhook},
		{Method: "GET", Pattern: "/v1/webhooks", Scope: sc, Handle: s.listWebhooks},
		{Method: "GET", Pattern: "/v1/webhooks/{id}", Scope: sc, Handle: s.getWebhook},
		{Method: "PATCH", Pattern: "/v1/webhooks/{id}", Scope: sc, Handle: s.updateWebhook},
		{Method: "DELETE", Pattern: "/v1/webhooks/{id}", Scope: sc, Handle: s.deleteWebhook},
		{Method: "POST", Pattern: "/v1/webhooks/{id}/rotate-secret", Scope: sc, Handle: s.rotateWebhookSecret},
		{Method: "GET", Pattern: "/v1/webhooks/{id}/attempts", Scope: sc, Handle: s.listWebhookAttempts},
		{Method: "POST", Pattern: "/v1/webhooks/{id}/replay", Scope: sc, Handle: s.replayWebhook},
	}
}

type webhookView struct {
	WebhookID      string    `json:"webhook_id"`
	URL            string    `json:"url"`
	EventTypes     []string  `json:"event_types"`
	Description    string    `json:"description"`
	Enabled        bool      `json:"enabled"`
	DisabledReason *string   `json:"disabled_reason"`
	CreatedAt      timestamp `json:"created_at"`
	UpdatedAt      timestamp `json:"updated_at"`
	Secret         string    `json:"secret,omitempty"`
}

func webhookViewOf(e webhooks.Endpoint) webhookView {
	v := webhookView{WebhookID: e.WebhookID, URL: e.URL, EventTypes: e.EventTypes, Description: e.Description, Enabled: e.Enabled,
		CreatedAt: timestamp(e.CreatedAt), UpdatedAt: timestamp(e.UpdatedAt)}
	if e.DisabledReason != "" {
		v.DisabledReason = &e.DisabledReason
	}
	return v
}

// webhookID returns the path's endpoint id, or not_found for one that
// cannot be an id.
func webhookID(r *http.Request) (string, error) {
	id := r.PathValue("id")
	if !validID(id) {
		return "", fail(errNotFound, "no webhook %s", id)
	}
	return id, nil
}

// toldWebhook passes on the webhooks service's refusals with their own
// words as the detail.
func toldWebhook(err error) error {
	for _, kind := range []error{domain.ErrInvalidWebhook, webhooks.ErrForbiddenAddress, webhooks.ErrNotFound, accounts.ErrInvalid,
		domain.ErrInvalidReason} {
		if errors.Is(err, kind) {
			msg := err.Error()
			if i := strings.Index(msg, kind.Error()); i >= 0 {
				msg = msg[i:]
			}
			return &detailed{kind: err, detail: msg}
		}
	}
	return err
}

type createWebhookRequest struct {
	URL         string   `json:"url"`
	EventTypes  []string `json:"event_types"`
	Description string   `json:"description"`
	Reason      string   `json:"reason"`
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	var req createWebhookRequest
	if err := decodeSmall(w, r, &req, false); err != nil {
		return err
	}
	c, err := s.deps.Webhooks.Create(r.Context(), rc.Principal.AccountID,
		domain.WebhookSettings{URL: req.URL, EventTypes: req.EventTypes, Description: req.Description}, s.action(rc, req.Reason))
	if err != nil {
		return toldWebhook(err)
	}
	rc.Log("webhook_id", c.WebhookID)
	v := webhookViewOf(c.Endpoint)
	v.Secret = c.Secret
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Location", "/v1/webhooks/"+c.WebhookID)
	return writeJSON(w, http.StatusCreated, v)
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	list, next, err := s.deps.Webhooks.List(r.Context(), rc.Principal.AccountID, limit, q.Get("cursor"))
	if err != nil {
		return toldWebhook(err)
	}
	out := struct {
		Webhooks   []webhookView `json:"webhooks"`
		NextCursor *string       `json:"next_cursor"`
	}{Webhooks: make([]webhookView, len(list))}
	for i, e := range list {
		out.Webhooks[i] = webhookViewOf(e)
	}
	if next != "" {
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	e, err := s.deps.Webhooks.Get(r.Context(), rc.Principal.AccountID, id)
	if err != nil {
		return toldWebhook(err)
	}
	return writeJSON(w, http.StatusOK, webhookViewOf(e))
}

type updateWebhookRequest struct {
	URL         *string   `json:"url"`
	EventTypes  *[]string `json:"event_types"`
	Description *string   `json:"description"`
	Enabled     *bool     `json:"enabled"`
	Reason      string    `json:"reason"`
}

func (s *Server) updateWebhook(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	var req updateWebhookRequest
	if err := decodeSmall(w, r, &req, false); err != nil {
		return err
	}
	ch := webhooks.Change{URL: req.URL, Description: req.Description, Enabled: req.Enabled}
	if req.EventTypes != nil {
		ch.EventTypes = *req.EventTypes
		if ch.EventTypes == nil {
			ch.EventTypes = []string{}
		}
	}
	e, err := s.deps.Webhooks.Update(r.Context(), rc.Principal.AccountID, id, ch, s.action(rc, req.Reason))
	if err != nil {
		return toldWebhook(err)
	}
	rc.Log("webhook_id", id)
	return writeJSON(w, http.StatusOK, webhookViewOf(e))
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeSmall(w, r, &req, true); err != nil {
		return err
	}
	if err := s.deps.Webhooks.Delete(r.Context(), rc.Principal.AccountID, id, s.action(rc, req.Reason)); err != nil {
		return toldWebhook(err)
	}
	rc.Log("webhook_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateWebhookSecret(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeSmall(w, r, &req, true); err != nil {
		return err
	}
	secret, expires, err := s.deps.Webhooks.RotateSecret(r.Context(), rc.Principal.AccountID, id, s.action(rc, req.Reason))
	if err != nil {
		return toldWebhook(err)
	}
	rc.Log("webhook_id", id)
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusOK, struct {
		WebhookID               string    `json:"webhook_id"`
		Secret                  string    `json:"secret"`
		PreviousSecretExpiresAt timestamp `json:"previous_secret_expires_at"`
	}{id, secret, timestamp(expires)})
}

type attemptView struct {
	EventID         string     `json:"event_id"`
	EventType       string     `json:"event_type"`
	StreamID        string     `json:"stream_id"`
	Attempt         int        `json:"attempt"`
	StatusCode      *int       `json:"status_code"`
	Error           *string    `json:"error"`
	DurationMS      int        `json:"duration_ms"`
	ResponseExcerpt string     `json:"response_excerpt"`
	At              timestamp  `json:"at"`
	NextAttemptAt   *timestamp `json:"next_attempt_at"`
	Outcome         string     `json:"outcome"`
}

func (s *Server) listWebhookAttempts(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	f := webhooks.AttemptFilter{Outcome: q.Get("outcome")}
	if raw := q.Get("event_id"); raw != "" {
		e, err := uuid.Parse(raw)
		if err != nil {
			return fail(errInvalidRequest, "event_id must be an event id (a UUID)")
		}
		f.EventID = &e
	}
	list, next, err := s.deps.Webhooks.Attempts(r.Context(), rc.Principal.AccountID, id, f, limit, q.Get("cursor"))
	if err != nil {
		return toldWebhook(err)
	}
	out := struct {
		Attempts   []attemptView `json:"attempts"`
		NextCursor *string       `json:"next_cursor"`
	}{Attempts: make([]attemptView, len(list))}
	for i, a := range list {
		v := attemptView{EventID: a.EventID.String(), EventType: a.EventType, StreamID: a.StreamID, Attempt: a.Attempt,
			StatusCode: a.StatusCode, DurationMS: a.DurationMS, ResponseExcerpt: a.ResponseExcerpt, At: timestamp(a.At), Outcome: a.Outcome}
		if a.Error != "" {
			v.Error = &a.Error
		}
		if a.NextAttemptAt != nil {
			v.NextAttemptAt = at(*a.NextAttemptAt)
		}
		out.Attempts[i] = v
	}
	if next != "" {
		out.NextCursor = &next
	}
	return writeJSON(w, http.StatusOK, out)
}

type replayRequest struct {
	Since    *string  `json:"since"`
	EventIDs []string `json:"event_ids"`
	Reason   string   `json:"reason"`
}

func (s *Server) replayWebhook(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id, err := webhookID(r)
	if err != nil {
		return err
	}
	var req replayRequest
	if err := decodeSmall(w, r, &req, false); err != nil {
		return err
	}
	var since *time.Time
	if req.Since != nil {
		t, err := time.Parse(time.RFC3339Nano, *req.Since)
		if err != nil {
			return fail(errInvalidRequest, "since must be an RFC 3339 time such as 2026-03-01T09:00:00Z")
		}
		since = &t
	}
	for _, e := range req.EventIDs {
		if _, err := uuid.Parse(e); err != nil {
			return fail(errInvalidRequest, "event_ids: %q is not an event id", e)
		}
	}
	n, err := s.deps.Webhooks.Replay(r.Context(), rc.Principal.AccountID, id, since, req.EventIDs, s.action(rc, req.Reason))
	if err != nil {
		return toldWebhook(err)
	}
	rc.Log("webhook_id", id, "queued", n)
	return writeJSON(w, http.StatusAccepted, struct {
		Queued int `json:"queued"`
	}{n})
}
