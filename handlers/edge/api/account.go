package api

import (
	"encoding/json"
	"net/http"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// accountView is GET /v1/account's body.
type accountView struct {
	AccountID        string       `json:"account_id"`
	Name             string       `json:"name"`
	Currency         string       `json:"currency"`
	Balance          domain.Money `json:"balance"`
	Reserved         domain.Money `json:"reserved"`
	AllowedCountries []string     `json:"allowed_countries"`
}

func (s *Server) getAccount(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	a, err := accounts.Load(r.Context(), s.deps.Store.Pool(), rc.Principal.AccountID)
	if err != nil {
		return err
	}
	allowed := a.AllowedCountries
	if allowed == nil {
		allowed = []string{}
	}
	return writeJSON(w, http.StatusOK, accountView{AccountID: a.ID, Name: a.Name, Currency: a.Currency,
		Balance:  domain.Money{AmountMicros: a.Balance, Currency: a.Currency},
		Reserved: domain.Money{AmountMicros: a.Reserved, Currency: a.Currency}, AllowedCountries: allowed})
}

// writeJSON writes a success body.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
	return nil
}
