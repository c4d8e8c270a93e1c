package api

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/handlers/commands/orders"
)

const maxIdempotencyKey = 255

// postOrder is POST /v1/orders: authenticate (done), decode and validate
// every message, price, then reserve and append in one transaction.
func (s *Server) postOrder(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	key, err := idempotencyKey(r.Header)
	if err != nil {
		return err
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return fail(errInvalidRequest, "Content-Type must be application/json")
	}
	if r.ContentLength > s.cfg.MaxBodyBytes {
		return fail(errTooLarge, "the body is %d bytes; at most %d are accepted", r.ContentLength, s.cfg.MaxBodyBytes)
	}
	account, err := s.deps.Accounts.Policy(r.Context(), rc.Principal.AccountID)
	if err != nil {
		return err
	}
	planner := accept.NewPlanner(s.deps.Policy, &account)
	if err := decodeOrder(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), planner, s.deps.Now()); err != nil {
		return err
	}
	plan, err := planner.Finish()
	if err != nil {
		return err
	}
	var sum [32]byte
	if key != "" { // only a key's repeat is ever compared
		if sum, err = orders.PlanHash(plan); err != nil {
			return err
		}
	}
	res, err := s.deps.Acceptor.Accept(r.Context(), orders.Request{
		Principal: rc.Principal, Plan: plan, IdempotencyKey: key, RequestHash: sum, RequestID: rc.ID,
		Render: renderAccepted,
	})
	if err != nil {
		var ib *domain.InsufficientBalanceError
		if errors.As(err, &ib) {
			rc.Log("required_micros", ib.Required.AmountMicros)
		}
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Location", "/v1/orders/"+res.OrderID)
	if res.Replayed {
		s.metrics.replays.Inc()
		h.Set("Idempotent-Replayed", "true")
		rc.Log("idempotent_replay", true)
		w.WriteHeader(res.Status)
		_, err := w.Write(res.Body)
		return ignoreWriteError(err)
	}
	acc := res.Accepted
	s.metrics.orders.Inc()
	s.metrics.messages.Add(float64(len(acc.Messages)))
	rc.Log("order_id", acc.OrderID, "message_count", len(acc.Messages))
	out := res.Body
	if out == nil {
		if out, err = renderAccepted(acc); err != nil {
			return err
		}
	}
	w.WriteHeader(http.StatusAccepted)
	_, err = w.Write(out)
	return ignoreWriteError(err)
}

// ignoreWriteError: once the status is sent, a client that went away is
// the log line's business, not an error response's.
func ignoreWriteError(error) error { return nil }

// idempotencyKey is the request's Idempotency-Key, "" when it sent none.
// A header that is present but empty, or sent twice, is refused rather
// than ignored: the client believes its retries are safe, and they would
// not be.
func idempotencyKey(h http.Header) (string, error) {
	vs, present := h["Idempotency-Key"]
	if !present {
		return "", nil
	}
	if len(vs) != 1 {
		return "", fail(errInvalidRequest, "send one Idempotency-Key header, not %d", len(vs))
	}
	key := vs[0]
	if key == "" || len(key) > maxIdempotencyKey || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return "", fail(errInvalidRequest, "Idempotency-Key must be 1 to %d visible ASCII characters", maxIdempotencyKey)
	}
	return key, nil
}

// renderAccepted writes the 202 body by hand: for a 100,000-message order
// reflection-based encoding of a response struct costs several times more
// and builds the whole value first.
func renderAccepted(a *orders.Accepted) ([]byte, error) {
	b := make([]byte, 0, 256+len(a.Messages)*130)
	b = append(b, `{"order_id":"`...)
	b = append(b, a.OrderID...)
	// status is the field's first name, kept for clients that read it;
	// state is what every other resource calls it.
	b = append(b, `","state":"accepted","status":"accepted","message_count":`...)
	b = strconv.AppendInt(b, int64(len(a.Messages)), 10)
	b = append(b, `,"price":`...)
	b = appendMoney(b, a.Price)
	b = append(b, `,"accepted_at":"`...)
	b = appendTimestamp(b, a.AcceptedAt)
	b = append(b, `","expires_at":"`...)
	b = appendTimestamp(b, a.ExpiresAt)
	if !a.SendAt.IsZero() {
		b = append(b, `","send_at":"`...)
		b = appendTimestamp(b, a.SendAt)
	}
	b = append(b, `","messages":[`...)
	for i, m := range a.Messages {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"message_id":"`...)
		b = append(b, m.ID...)
		b = append(b, `","to":"`...)
		b = append(b, m.To...) // E.164: digits and '+', nothing to escape
		b = append(b, `","segments":`...)
		b = strconv.AppendInt(b, int64(m.Segments), 10)
		b = append(b, `,"price":`...)
		b = appendMoney(b, m.Price)
		b = append(b, '}')
	}
	b = append(b, `],"links":{"order":"/v1/orders/`...)
	b = append(b, a.OrderID...)
	b = append(b, `","messages":"/v1/orders/`...)
	b = append(b, a.OrderID...)
	b = append(b, `/messages","events":"/v1/events/stream?order_id=`...)
	b = append(b, a.OrderID...)
	b = append(b, `"}}`...)
	b = append(b, '\n')
	return b, nil
}

func appendMoney(b []byte, m domain.Money) []byte {
	b = append(b, `{"amount_micros":`...)
	b = strconv.AppendInt(b, m.AmountMicros, 10)
	b = append(b, `,"currency":"`...)
	b = append(b, m.Currency...) // validated ISO code
	return append(b, `"}`...)
}
