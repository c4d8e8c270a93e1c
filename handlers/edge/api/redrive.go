package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/orders"
)

// maxRedriveBody bounds a re-drive's body; maxFailureCodes the codes it
// may name.
const (
	maxRedriveBody  = 16 << 10
	maxFailureCodes = 32
)

// redriveRequest is the body of both re-drive endpoints.
type redriveRequest struct {
	Reason       *string  `json:"reason"`
	FailureCodes []string `json:"failure_codes"`
	DryRun       bool     `json:"dry_run"`
}

// decodeRedrive reads {"reason", "failure_codes"?, "dry_run"?}: a missing
// body, unknown or repeated fields, a value of the wrong type or a failure
// code that is not one (lower case letters, digits and _) are
// invalid_request naming the field. The reason's own rules are the
// domain's (domain.CheckReason), checked by the command.
func decodeRedrive(w http.ResponseWriter, r *http.Request) (redriveRequest, error) {
	var req redriveRequest
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return req, fail(errInvalidRequest, "Content-Type must be application/json")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRedriveBody))
	if err != nil {
		var mb *http.MaxBytesError
		if errors.As(err, &mb) {
			return req, fail(errTooLarge, "the body exceeds %d bytes", mb.Limit)
		}
		return req, err
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return req, fail(errInvalidRequest, "a re-drive needs a body {\"reason\": string}: the reason is recorded with the re-drive")
	}
	if err := json.Unmarshal(body, &req, json.RejectUnknownMembers(true), jsontext.AllowDuplicateNames(false)); err != nil {
		var se *json.SemanticError
		if errors.As(err, &se) && errors.Is(se.Err, json.ErrUnknownName) {
			return req, fail(errInvalidRequest, "unknown field %s (a re-drive takes reason, failure_codes and dry_run)", se.JSONPointer)
		}
		if errors.As(err, &se) && se.JSONPointer != "" {
			field, _, _ := strings.Cut(strings.TrimPrefix(string(se.JSONPointer), "/"), "/")
			want := map[string]string{"reason": "a string", "dry_run": "true or false",
				"failure_codes": "an array of failure codes (strings)"}[field]
			return req, fail(errInvalidRequest, "%s must be %s", field, want)
		}
		return req, fail(errInvalidRequest, "the body must be a JSON object {\"reason\": string, \"failure_codes\"?: [string], \"dry_run\"?: bool}: %v", err)
	}
	if req.Reason == nil {
		return req, fail(errInvalidRequest, "reason is required: it is recorded with the re-drive")
	}
	if len(req.FailureCodes) > maxFailureCodes {
		return req, fail(errInvalidRequest, "failure_codes names %d codes; at most %d", len(req.FailureCodes), maxFailureCodes)
	}
	for i, c := range req.FailureCodes {
		if !failureCodeShape(c) {
			return req, fail(errInvalidRequest, "failure_codes[%d]: %q is not a failure code (lower case letters, digits and _, such as %s)",
				i, c, domain.CodeUndeliverable)
		}
	}
	return req, nil
}

func failureCodeShape(c string) bool {
	if c == "" || len(c) > 64 {
		return false
	}
	for _, r := range c {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

func (s *Server) redriveRequestOf(r *http.Request, rc *RequestContext, body redriveRequest) (orders.RedriveRequest, error) {
	account, err := s.deps.Accounts.Policy(r.Context(), rc.Principal.AccountID)
	if err != nil {
		return orders.RedriveRequest{}, err
	}
	return orders.RedriveRequest{Principal: rc.Principal, Account: account, Reason: *body.Reason,
		FailureCodes: body.FailureCodes, DryRun: body.DryRun, RequestID: rc.ID}, nil
}

// redriveView is a re-drive's answer.
type redriveView struct {
	Redriven int `json:"redriven"`
	// OrderID is the (first) new order, OrderIDs every one: an order's
	// re-drive puts up to 500 copies in each.
	OrderID  string       `json:"order_id"`
	OrderIDs []string     `json:"order_ids"`
	Price    domain.Money `json:"price"`
	// Messages pairs every copy with the message it sends again.
	Messages        []redrivenView `json:"messages"`
	AlreadyRedriven int            `json:"already_redriven"`
	NotRedrivable   int            `json:"not_redrivable"`
}

type redrivenView struct {
	MessageID string `json:"message_id"`
	RedriveOf string `json:"redrive_of"`
	To        string `json:"to"`
}

// dryRunView is a dry run's answer: what a re-drive would do now.
type dryRunView struct {
	Redrivable      int `json:"redrivable"`
	AlreadyRedriven int `json:"already_redriven"`
	NotRedrivable   int `json:"not_redrivable"`
}

func (s *Server) writeRedrive(w http.ResponseWriter, rc *RequestContext, res orders.RedriveResult, dry bool, currency string) error {
	if dry {
		return writeJSON(w, http.StatusOK, dryRunView{Redrivable: res.Redrivable, AlreadyRedriven: res.AlreadyRedriven, NotRedrivable: res.NotRedrivable})
	}
	v := redriveView{Redriven: res.Redrivable, OrderIDs: []string{}, Messages: []redrivenView{}, Price: domain.Zero(currency),
		AlreadyRedriven: res.AlreadyRedriven, NotRedrivable: res.NotRedrivable}
	for _, acc := range res.Orders {
		v.OrderIDs = append(v.OrderIDs, acc.OrderID)
		v.Price.AmountMicros += acc.Price.AmountMicros
		for _, m := range acc.Messages {
			v.Messages = append(v.Messages, redrivenView{MessageID: m.ID, RedriveOf: m.RedriveOf, To: m.To})
		}
	}
	if len(v.OrderIDs) > 0 {
		v.OrderID = v.OrderIDs[0]
		w.Header().Set("Location", "/v1/orders/"+v.OrderID)
	}
	rc.Log("redriven", v.Redriven, "new_orders", len(v.OrderIDs))
	return writeJSON(w, http.StatusAccepted, v)
}

// redriveMessage is POST /v1/messages/{id}/redrive: 202 with the new order
// and the copy, 409 not_redrivable unless the message failed, 409
// already_redriven the second time, 402 when the balance is short, 404
// for another account's message.
func (s *Server) redriveMessage(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	return s.redrive(w, r, rc, "message", s.deps.Redriver.Message)
}

// redriveOrder is POST /v1/orders/{id}/redrive: every failed message of
// the order not yet re-driven (of failure_codes, when given) is sent
// again; 409 not_redrivable when there is none.
func (s *Server) redriveOrder(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	return s.redrive(w, r, rc, "order", s.deps.Redriver.Order)
}

// redrive is both routes: what (message or order) names the path's id.
func (s *Server) redrive(w http.ResponseWriter, r *http.Request, rc *RequestContext, what string,
	run func(context.Context, orders.RedriveRequest, string) (orders.RedriveResult, error)) error {
	id := r.PathValue("id")
	rc.Log(what+"_id", id)
	if !validID(id) {
		return fail(errNotFound, "no %s %s", what, id)
	}
	body, err := decodeRedrive(w, r)
	if err != nil {
		return err
	}
	req, err := s.redriveRequestOf(r, rc, body)
	if err != nil {
		return err
	}
	res, err := run(r.Context(), req, id)
	if err != nil {
		return redriveError(err, what, id)
	}
	return s.writeRedrive(w, rc, res, body.DryRun, req.Account.Currency)
}

func redriveError(err error, what, id string) error {
	switch {
	case errors.Is(err, orders.ErrRedriveNotFound):
		return fail(errNotFound, "no %s %s", what, id)
	case errors.Is(err, orders.ErrAlreadyRedriven):
		return &detailed{kind: orders.ErrAlreadyRedriven, detail: err.Error() + "; a message is re-driven at most once"}
	case errors.Is(err, orders.ErrNotRedrivable):
		return &detailed{kind: orders.ErrNotRedrivable, detail: err.Error()}
	case errors.Is(err, domain.ErrInvalidReason):
		return fail(errInvalidRequest, "reason: %s", strings.TrimPrefix(err.Error(), domain.ErrInvalidReason.Error()+": "))
	}
	return fmt.Errorf("re-drive %s %s: %w", what, id, err)
}
