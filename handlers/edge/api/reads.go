package api

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/projections"
)

// The read side: orders, messages, their history and the support search,
// answered from the read models (projections) and, for history and time
// travel, from the store. Tenancy is projections.Tenant's job; these
// handlers only choose the tenant from the key and shape the JSON.

// tenantOf is whose rows a key may read: an admin key any account's, every
// other key its own account's.
func tenantOf(p accounts.Principal) projections.Tenant {
	if p.Has(accounts.ScopeAdmin) {
		return projections.AnyAccount()
	}
	return projections.ForAccount(p.AccountID)
}

// listAccount is the one account a list or stream reads: the key's own,
// or for an admin key the one named by ?account_id=.
func listAccount(r *http.Request, p accounts.Principal) (string, error) {
	id := r.URL.Query().Get("account_id")
	if id == "" || id == p.AccountID {
		return p.AccountID, nil
	}
	if !p.Has(accounts.ScopeAdmin) {
		return "", fail(errForbidden, "account_id names another account; only an admin key may")
	}
	return id, nil
}

// validID reports whether id could be a ULID, so that garbage is a 404
// without a query.
func validID(id string) bool {
	if len(id) != 26 {
		return false
	}
	for _, c := range id {
		if !(c >= '0' && c <= '9' || c >= 'A' && c <= 'Z') {
			return false
		}
	}
	return true
}

func notFound(err error, what, id string) error {
	if errors.Is(err, projections.ErrNotFound) {
		return fail(errNotFound, "no %s %s", what, id)
	}
	return err
}

func invalid(err error) error {
	if errors.Is(err, projections.ErrInvalidQuery) {
		return fail(errInvalidRequest, "%s", strings.TrimPrefix(err.Error(), projections.ErrInvalidQuery.Error()+": "))
	}
	return err
}

func (s *Server) getOrder(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("order_id", id)
	if !validID(id) {
		return fail(errNotFound, "no order %s", id)
	}
	o, err := projections.GetOrder(r.Context(), s.deps.Store.Pool(), tenantOf(rc.Principal), id)
	if err != nil {
		return notFound(err, "order", id)
	}
	return writeJSON(w, http.StatusOK, orderViewOf(&o))
}

// listOrders is GET /v1/orders: the account's orders newest first, each
// as GET /v1/orders/{id} shows it, filtered by state and accepted time.
func (s *Server) listOrders(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	account, err := listAccount(r, rc.Principal)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	l := projections.OrderList{State: q.Get("state"), Cursor: q.Get("cursor")}
	if l.Limit, err = pageLimit(q.Get("limit")); err != nil {
		return err
	}
	if l.Since, err = queryTime(q.Get("since"), "since"); err != nil {
		return err
	}
	if l.Until, err = queryTime(q.Get("until"), "until"); err != nil {
		return err
	}
	page, err := projections.ListOrders(r.Context(), s.deps.Store.Pool(), account, l)
	if err != nil {
		return invalid(err)
	}
	v := orderPageView{Orders: make([]orderView, len(page.Orders))}
	for i := range page.Orders {
		v.Orders[i] = orderViewOf(&page.Orders[i])
	}
	if page.Next != "" {
		v.NextCursor = &page.Next
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) listOrderMessages(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("order_id", id)
	if !validID(id) {
		return fail(errNotFound, "no order %s", id)
	}
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	page, err := projections.OrderMessages(r.Context(), s.deps.Store.Pool(), tenantOf(rc.Principal), id, q.Get("state"), limit, q.Get("cursor"))
	if err != nil {
		return invalid(notFound(err, "order", id))
	}
	return writeJSON(w, http.StatusOK, pageViewOf(page))
}

func (s *Server) searchMessages(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	account, err := listAccount(r, rc.Principal)
	if err != nil {
		return err
	}
	q := r.URL.Query()
	search := projections.Search{To: q.Get("to"), State: q.Get("state"), OrderID: q.Get("order_id"), Cursor: q.Get("cursor")}
	if search.Limit, err = pageLimit(q.Get("limit")); err != nil {
		return err
	}
	if search.Since, err = queryTime(q.Get("since"), "since"); err != nil {
		return err
	}
	if search.Until, err = queryTime(q.Get("until"), "until"); err != nil {
		return err
	}
	if search.To != "" && !strings.HasPrefix(search.To, "+") {
		search.To = "+" + search.To // E.164 as people type it
	}
	page, err := projections.SearchMessages(r.Context(), s.deps.Store.Pool(), account, search)
	if err != nil {
		return invalid(err)
	}
	return writeJSON(w, http.StatusOK, pageViewOf(page))
}

func (s *Server) getMessage(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("message_id", id)
	if !validID(id) {
		return fail(errNotFound, "no message %s", id)
	}
	tenant := tenantOf(rc.Principal)
	if raw := r.URL.Query().Get("as_of"); raw != "" {
		at, err := queryTime(raw, "as_of")
		if err != nil {
			return err
		}
		m, err := projections.MessageAsOf(r.Context(), s.deps.Store.Pool(), tenant, id, at)
		if err != nil {
			return notFound(err, "message", id)
		}
		v := messageViewOf(&m)
		ts := timestamp(at)
		v.AsOf = &ts
		return writeJSON(w, http.StatusOK, v)
	}
	m, err := projections.GetMessage(r.Context(), s.deps.Store.Pool(), tenant, id)
	if err != nil {
		return notFound(err, "message", id)
	}
	return writeJSON(w, http.StatusOK, messageViewOf(&m))
}

func (s *Server) getMessageEvents(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("message_id", id)
	if !validID(id) {
		return fail(errNotFound, "no message %s", id)
	}
	h, err := projections.MessageHistory(r.Context(), s.deps.Store.Pool(), tenantOf(rc.Principal), id)
	if err != nil {
		return notFound(err, "message", id)
	}
	v := historyView{Events: make([]eventView, len(h.Events)), HashChain: "valid", Problems: h.Problems}
	if !h.ChainIntact {
		v.HashChain = "broken"
	}
	for i, e := range h.Events {
		v.Events[i] = eventView{Position: e.Position, Stream: e.Stream, Version: e.Version, ID: e.ID.String(), Type: e.Type,
			SchemaVersion: e.SchemaVersion, RecordedAt: e.RecordedAt, Data: e.Data, Metadata: e.Metadata}
	}
	return writeJSON(w, http.StatusOK, v)
}

// getAccountEvents pages through the account's own stream, newest first:
// its credits and every reservation, charge and release.
func (s *Server) getAccountEvents(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	rc.Log("account_id", id)
	if !validID(id) {
		return fail(errNotFound, "no account %s", id)
	}
	q := r.URL.Query()
	limit, err := pageLimit(q.Get("limit"))
	if err != nil {
		return err
	}
	page, err := projections.AccountEvents(r.Context(), s.deps.Store.Pool(), tenantOf(rc.Principal), id, limit, q.Get("cursor"))
	if err != nil {
		return invalid(notFound(err, "account", id))
	}
	v := accountEventsView{Events: make([]eventView, len(page.Events))}
	for i, e := range page.Events {
		v.Events[i] = eventView{Position: e.Position, Stream: e.Stream, Version: e.Version, ID: e.ID.String(), Type: e.Type,
			SchemaVersion: e.SchemaVersion, RecordedAt: e.RecordedAt, Data: e.Data, Metadata: e.Metadata}
	}
	if page.Next != "" {
		v.NextCursor = &page.Next
	}
	return writeJSON(w, http.StatusOK, v)
}

func (s *Server) getAccountSummary(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	id := r.PathValue("id")
	if !validID(id) {
		return fail(errNotFound, "no account %s", id)
	}
	a, err := projections.GetAccount(r.Context(), s.deps.Store.Pool(), tenantOf(rc.Principal), id)
	if err != nil {
		return notFound(err, "account", id)
	}
	return writeJSON(w, http.StatusOK, accountSummaryOf(a))
}

func accountSummaryOf(a projections.Account) accountSummaryView {
	money := func(micros int64) domain.Money { return domain.Money{AmountMicros: micros, Currency: a.Currency} }
	return accountSummaryView{AccountID: a.ID, Name: a.Name, Currency: a.Currency,
		Balance: money(a.Balance), Reserved: money(a.Reserved), Credited: money(a.Credited), Spent: money(a.Spent),
		Refunded: money(a.Refunded), OpenedAt: timestamp(a.OpenedAt), Version: a.Version}
}

func (s *Server) getProviderStats(w http.ResponseWriter, r *http.Request, _ *RequestContext) error {
	q := r.URL.Query()
	now := s.deps.Now().UTC()
	since, err := queryTime(q.Get("since"), "since")
	if err != nil {
		return err
	}
	until, err := queryTime(q.Get("until"), "until")
	if err != nil {
		return err
	}
	if until.IsZero() {
		until = now.Add(time.Hour)
	}
	if since.IsZero() {
		since = now.Add(-24 * time.Hour)
	}
	stats, err := projections.GetProviderStats(r.Context(), s.deps.Store.Pool(), since, until)
	if err != nil {
		return err
	}
	out := providerStatsView{Since: timestamp(since.Truncate(time.Hour)), Until: timestamp(until), Providers: make([]providerView, len(stats))}
	for i, p := range stats {
		out.Providers[i] = providerViewOf(p)
	}
	return writeJSON(w, http.StatusOK, out)
}

const (
	defaultPage = 50
	maxPage     = 500
)

func pageLimit(raw string) (int, error) {
	if raw == "" {
		return defaultPage, nil
	}
	n, err := strconv.Atoi(raw)
	if err != nil || n < 1 || n > maxPage {
		return 0, fail(errInvalidRequest, "limit must be a number from 1 to %d", maxPage)
	}
	return n, nil
}

func queryTime(raw, name string) (time.Time, error) {
	if raw == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		return time.Time{}, fail(errInvalidRequest, "%s must be an RFC 3339 time such as 2026-03-01T09:00:00Z", name)
	}
	return t.UTC(), nil
}

// lagView is one projection's lag in /readyz. It informs, it does not
// gate: a lagging read side does not stop the API from accepting orders.
type lagView struct {
	Position      int64   `json:"position"`
	EventsBehind  int64   `json:"events_behind"`
	Capped        bool    `json:"events_behind_capped,omitempty"`
	SecondsBehind float64 `json:"seconds_behind"`
}

// projectionLag reports where each projection stands against the store,
// for /readyz.
func (s *Server) projectionLag(ctx context.Context) map[string]any {
	if s.deps.Store == nil {
		return nil
	}
	st, err := projections.Statuses(ctx, s.deps.Store.Pool(), s.deps.Now())
	if err != nil {
		return map[string]any{"error": err.Error()}
	}
	out := map[string]any{}
	for _, p := range st {
		out[p.Name] = lagView{Position: p.Checkpoint.Position, EventsBehind: p.EventsBehind, Capped: p.Capped,
			SecondsBehind: math.Round(p.SecondsBehind*1000) / 1000}
	}
	return out
}
