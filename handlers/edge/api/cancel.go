package api

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/handlers/commands/cancel"
	"github.com/afterok/afterok/projections"
)

// maxCancelBody bounds a cancel's body ({"reason"}); maxReason its reason.
const (
	maxCancelBody = 8 << 10
	maxReason     = 500
)

// cancelRequest is the body of both cancel endpoints. It may be absent.
type cancelRequest struct {
	Reason string `json:"reason"`
}

// decodeCancel reads {"reason"?}: unknown or repeated fields, a reason that
// is not a string, too long, or holds U+0000 or text that is not valid
// Unicode are invalid_request naming the field.
func decodeCancel(w http.ResponseWriter, r *http.Request) (string, error) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return "", fail(errInvalidRequest, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCancelBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return "", fail(errTooLarge, "the body exceeds %d bytes", mb.Limit)
		}
		return "", err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return "", nil
	}
	var req cancelRequest
	if err := json.Unmarshal(body, &req, json.RejectUnknownMembers(true), jsontext.AllowDuplicateNames(false)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) && errors.Is(se.Err, json.ErrUnknownName) {
			return "", fail(errInvalidRequest, "unknown field %s (a cancel takes an optional reason)", se.JSONPointer)
		}
		if errors.As(err, &se) && se.JSONPointer == "/reason" {
			return "", fail(errInvalidRequest, "reason must be a string")
		}
		return "", fail(errInvalidRequest, "the body must be a JSON object {\"reason\"?: string}: %v", err)
	}
	switch {
	case utf8.RuneCountInString(req.Reason) > maxReason:
		return "", fail(errInvalidRequest, "reason is longer than %d characters", maxReason)
	case strings.IndexByte(req.Reason, 0) >= 0:
		return "", fail(errInvalidRequest, "reason contains U+0000 (NUL), which cannot be stored")
	}
	return req.Reason, nil
}

func (s *Server) cancelRequestOf(rc *RequestContext, reason string) cancel.Request {
	return cancel.Request{AccountID: rc.Principal.AccountID, KeyID: rc.Principal.KeyID, Reason: reason, RequestID: rc.ID}
}

// cancelMessage is POST /v1/messages/{id}/cancel: 200 with the message as
// it now stands, 409 not_cancelable once a worker routed it or it is
// final, 404 for another account's message.
func (s *Server) cancelMessage(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("message_id", id)
	if !validID(id) {
		return fail(errNotFound, "no message %s", id)
	}
	reason, err := decodeCancel(w, r)
	if err != nil {
		return err
	}
	if _, err := s.deps.Canceler.Message(r.Context(), s.cancelRequestOf(rc, reason), id); err != nil {
		return cancelError(err, "message", id)
	}
	// Shown from the store, not the read model, which may not have the
	// cancel yet.
	m, err := projections.MessageAsOf(r.Context(), s.deps.Store.Pool(), projections.ForAccount(rc.Principal.AccountID), id, time.Time{})
	if err != nil {
		return notFound(err, "message", id)
	}
	return writeJSON(w, http.StatusOK, messageViewOf(&m))
}

// cancelOrder is POST /v1/orders/{id}/cancel: 200 {"canceled", "not_cancelable"}.
func (s *Server) cancelOrder(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("order_id", id)
	if !validID(id) {
		return fail(errNotFound, "no order %s", id)
	}
	reason, err := decodeCancel(w, r)
	if err != nil {
		return err
	}
	res, err := s.deps.Canceler.Order(r.Context(), s.cancelRequestOf(rc, reason), id)
	if err != nil {
		return cancelError(err, "order", id)
	}
	rc.Log("canceled", res.Canceled, "not_cancelable", res.NotCancelable)
	return writeJSON(w, http.StatusOK, res)
}

func cancelError(err error, what, id string) error {
	switch {
	case errors.Is(err, cancel.ErrNotFound):
		return fail(errNotFound, "no %s %s", what, id)
	case errors.Is(err, cancel.ErrNotCancelable):
		return &detailed{kind: cancel.ErrNotCancelable, detail: err.Error() + "; only a message not yet routed (scheduled, accepted, queued or waiting for a retry) can be canceled"}
	}
	return err
}
