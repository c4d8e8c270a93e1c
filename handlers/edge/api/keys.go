package api

import (
	"errors"
	"net/http"
	"strings"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// The caller's own keys (scope keys:manage): list, issue, revoke. A key
// is always the caller's account's: another account's key is 404.

type keyView struct {
	KeyID      string     `json:"key_id"`
	Prefix     string     `json:"prefix"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  timestamp  `json:"created_at"`
	LastUsedAt *timestamp `json:"last_used_at"`
	RevokedAt  *timestamp `json:"revoked_at,omitempty"`
}

func (s *Server) listKeys(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	keys, err := s.deps.Accounts.ListKeys(r.Context(), rc.Principal.AccountID)
	if err != nil {
		return err
	}
	out := struct {
		Keys []keyView `json:"keys"`
	}{Keys: make([]keyView, len(keys))}
	for i, k := range keys {
		v := keyView{KeyID: k.KeyID, Prefix: k.Prefix, Scopes: k.Scopes, CreatedAt: timestamp(k.CreatedAt)}
		if k.LastUsedAt != nil {
			v.LastUsedAt = at(*k.LastUsedAt)
		}
		if k.RevokedAt != nil {
			v.RevokedAt = at(*k.RevokedAt)
		}
		out.Keys[i] = v
	}
	return writeJSON(w, http.StatusOK, out)
}

type issueKeyRequest struct {
	Scopes []string `json:"scopes"`
	Reason string   `json:"reason"`
}

func (s *Server) issueKey(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	var req issueKeyRequest
	if err := decodeSmall(w, r, &req, true); err != nil {
		return err
	}
	k, err := s.deps.Accounts.IssueKey(r.Context(), rc.Principal.AccountID, req.Scopes, &rc.Principal, s.action(rc, req.Reason))
	if err != nil {
		return told(err)
	}
	rc.Log("issued_key_id", k.KeyID)
	w.Header().Set("Cache-Control", "no-store")
	return writeJSON(w, http.StatusCreated, struct {
		KeyID  string   `json:"key_id"`
		APIKey string   `json:"api_key"`
		Scopes []string `json:"scopes"`
	}{k.KeyID, k.APIKey, k.Scopes})
}

func (s *Server) revokeKey(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	if !strings.HasPrefix(id, "key_") || !validID(strings.ToUpper(strings.TrimPrefix(id, "key_"))) {
		return fail(errNotFound, "no key %s", id)
	}
	var req struct {
		Reason string `json:"reason"`
	}
	if err := decodeSmall(w, r, &req, true); err != nil {
		return err
	}
	if err := s.deps.Accounts.RevokeKey(r.Context(), rc.Principal.AccountID, id, &rc.Principal, s.action(rc, req.Reason)); err != nil {
		return told(err)
	}
	rc.Log("revoked_key_id", id)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// told passes on a refusal of the accounts service with its own words as
// the problem's detail (from the refusal's kind on: "scope not held: this
// key lacks the admin scope"); anything else is passed on as it is.
func told(err error) error {
	for _, kind := range []error{accounts.ErrInvalid, accounts.ErrScopeNotHeld, accounts.ErrUnservedCurrency,
		accounts.ErrUnknownKey, accounts.ErrUnknownAccount, domain.ErrInvalidAmount, domain.ErrInvalidReason} {
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
