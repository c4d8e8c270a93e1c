package api

import (
	"net/http"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/projections"
)

// The operator's account endpoints (scope admin): list, open, credit. An
// admin key sees every account; the work is in handlers/commands/accounts,
// the list in projections.

type accountListView struct {
	Accounts   []accountSummaryView `json:"accounts"`
	NextCursor *string              `json:"next_cursor"`
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request, _ *RequestContext) error {
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	page, err := projections.ListAccounts(r.Context(), s.deps.Store.Pool(), limit, q.Get("cursor"))
	if err != nil {
		return invalid(err)
	}
	out := accountListView{Accounts: make([]accountSummaryView, len(page.Accounts))}
	for i, a := range page.Accounts {
		out.Accounts[i] = accountSummaryOf(a)
	}
	if page.Next != "" {
		out.NextCursor = &page.Next
	}
	return writeJSON(w, http.StatusOK, out)
}

// openAccountRequest is POST /v1/accounts's body, the fields of
// `afterok accounts create`.
type openAccountRequest struct {
	Name         *string  `json:"name"`
	CreditMicros *int64   `json:"credit_micros"`
	Currency     string   `json:"currency"`
	Countries    []string `json:"countries"`
	Scopes       []string `json:"scopes"`
	Reason       string   `json:"reason"`
}

type openedAccountView struct {
	AccountID string       `json:"account_id"`
	Name      string       `json:"name"`
	Balance   domain.Money `json:"balance"`
	KeyID     string       `json:"key_id"`
	APIKey    string       `json:"api_key"`
	Scopes    []string     `json:"scopes"`
}

func (s *Server) openAccount(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	var req openAccountRequest
	if err := decodeSmall(w, r, &req, false); err != nil {
		return err
	}
	switch {
	case req.Name == nil:
		return fail(errInvalidRequest, "name: required")
	case req.CreditMicros == nil:
		return fail(errInvalidRequest, "credit_micros: required (the opening credit, in micro-units)")
	case *req.CreditMicros <= 0 || *req.CreditMicros > domain.MaxCreditMicros:
		return fail(errInvalidRequest, "credit_micros: must be from 1 to %d", domain.MaxCreditMicros)
	}
	currency := req.Currency
	if currency == "" {
		currency = s.deps.Accounts.DefaultCurrency()
	}
	created, err := s.deps.Accounts.Create(r.Context(), accounts.NewAccount{Name: *req.Name,
		Credit: domain.Money{AmountMicros: *req.CreditMicros, Currency: currency}, Scopes: req.Scopes,
		AllowedCountries: req.Countries, Action: s.action(rc, req.Reason)})
	if err != nil {
		return told(err)
	}
	rc.Log("opened_account_id", created.AccountID)
	w.Header().Set("Location", "/v1/accounts/"+created.AccountID)
	return writeJSON(w, http.StatusCreated, openedAccountView{AccountID: created.AccountID, Name: created.Name,
		Balance: created.Balance, KeyID: created.KeyID, APIKey: created.APIKey, Scopes: created.Scopes})
}

type creditRequest struct {
	AmountMicros *int64  `json:"amount_micros"`
	Reason       *string `json:"reason"`
}

func (s *Server) creditAccount(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	if !validID(id) {
		return fail(errNotFound, "no account %s", id)
	}
	key, err := idempotencyKey(r.Header) // the rules of POST /v1/orders
	if err != nil {
		return err
	}
	var req creditRequest
	if err := decodeSmall(w, r, &req, false); err != nil {
		return err
	}
	switch {
	case req.AmountMicros == nil:
		return fail(errInvalidRequest, "amount_micros: required")
	case req.Reason == nil:
		return fail(errInvalidRequest, "reason: required (it is kept in the account's history)")
	}
	// The key is the admin's: it is scoped to the caller's account, not
	// to the one credited.
	res, err := s.deps.Accounts.CreditOnce(r.Context(), accounts.CreditRequest{AccountID: id, AmountMicros: *req.AmountMicros,
		Action: s.action(rc, *req.Reason), IdempotencyKey: key, KeyScope: rc.Principal.AccountID})
	if err != nil {
		return told(err)
	}
	rc.Log("credited_account_id", id, "amount_micros", *req.AmountMicros)
	if res.Body == nil {
		return writeJSON(w, http.StatusCreated, res.Credited)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	if res.Replayed {
		h.Set("Idempotent-Replayed", "true")
		rc.Log("idempotent_replay", true)
	}
	w.WriteHeader(res.Status)
	_, err = w.Write(res.Body)
	return ignoreWriteError(err)
}

// action is who acts through this request: its key, its request id.
func (s *Server) action(rc *RequestContext, reason string) accounts.Action {
	return accounts.Action{Actor: rc.Principal.KeyID, Reason: reason, Cause: rc.ID}
}
