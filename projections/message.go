package projections

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
)

// Message is a message as the read model holds it and the API shows it.
// Zero times mean "not reached".
type Message struct {
	ID        string
	OrderID   string
	AccountID string
	Index     int
	To        string
	Country   string
	From      string
	Encoding  string
	Segments  int
	Price     domain.Money
	Body      string

	// State is the public state (scheduled, accepted, queued, routed,
	// submitted, delivered, failed, canceled); Attempt is the attempt to show (a waiting retry
	// is queued with the next attempt's number).
	State             string
	Attempt           int
	Route             *Route
	ProviderMessageID string
	Failure           *domain.Failure

	AcceptedAt, QueuedAt, RoutedAt, SubmittedAt, DeliveredAt, FailedAt, RetriedAt time.Time
	ExpiresAt                                                                     time.Time
	// SendAt is the send_at the client asked for (zero: at once);
	// CanceledAt when the message was canceled.
	SendAt, CanceledAt time.Time

	// RedriveOf is the failed message this one sends again; RedrivenAs
	// the copy this failed message was sent again as ("" for none).
	RedriveOf, RedrivenAs string

	// Version is the number of the stream's events folded.
	Version int

	// What the next fold needs beyond the public fields.
	lifecycle      domain.MessageState
	currentAttempt int
	nextAttempt    int
	notBefore      time.Time
}

// Route is the routing decision of the current attempt.
type Route struct {
	RouteID  string
	Provider string
	Reason   string
}

// messageOf renders a folded aggregate as the read model shows it. The
// projector, time travel and verify all go through here, so a message
// looks the same whichever way it was computed.
func messageOf(m *domain.Message) Message {
	r := Message{
		ID: m.ID, OrderID: m.OrderID, AccountID: m.AccountID, Index: m.Index, To: m.To, Country: m.Country,
		From: m.From, Encoding: m.Encoding, Segments: m.Segments, Price: m.Price, Body: m.Body,
		State: m.State.PublicState(), Attempt: m.DisplayAttempt(), ProviderMessageID: m.ProviderMessageID,
		AcceptedAt: m.AcceptedAt, QueuedAt: m.QueuedAt, RoutedAt: m.RoutedAt, SubmittedAt: m.SubmittedAt,
		DeliveredAt: m.DeliveredAt, FailedAt: m.FailedAt, RetriedAt: m.RetriedAt, ExpiresAt: m.ExpiresAt,
		SendAt: m.SendAt, CanceledAt: m.CanceledAt, Version: m.Version, RedriveOf: m.RedriveOf, lifecycle: m.State, currentAttempt: m.Attempt, nextAttempt: m.NextAttempt, notBefore: m.NotBefore,
	}
	for _, t := range []*time.Time{&r.AcceptedAt, &r.QueuedAt, &r.RoutedAt, &r.SubmittedAt, &r.DeliveredAt,
		&r.FailedAt, &r.RetriedAt, &r.ExpiresAt, &r.notBefore, &r.SendAt, &r.CanceledAt} {
		*t = stored(*t)
	}
	if m.Redriven != nil {
		r.RedrivenAs = m.Redriven.RedrivenAs
	}
	if m.Routing != nil {
		r.Route = &Route{RouteID: m.Routing.RouteID, Provider: m.Routing.Provider, Reason: m.Routing.Reason}
	}
	if m.Failure != nil {
		f := *m.Failure
		r.Failure = &f
	}
	return r
}

// aggregate turns a row back into the aggregate the next event folds into.
// Only what Apply reads and messageOf shows needs to survive the trip: the
// route's candidates and the excluded providers are the pipeline's
// business, not the read model's.
func (r *Message) aggregate() domain.Message {
	m := domain.Message{
		ID: r.ID, OrderID: r.OrderID, AccountID: r.AccountID, Index: r.Index, To: r.To, Country: r.Country,
		From: r.From, Encoding: r.Encoding, Segments: r.Segments, Price: r.Price, Body: r.Body, ExpiresAt: r.ExpiresAt,
		State: r.lifecycle, Attempt: r.currentAttempt, NextAttempt: r.nextAttempt, NotBefore: r.notBefore,
		Version: r.Version, ProviderMessageID: r.ProviderMessageID,
		AcceptedAt: r.AcceptedAt, QueuedAt: r.QueuedAt, RoutedAt: r.RoutedAt, SubmittedAt: r.SubmittedAt,
		DeliveredAt: r.DeliveredAt, FailedAt: r.FailedAt, RetriedAt: r.RetriedAt,
		SendAt: r.SendAt, CanceledAt: r.CanceledAt, RedriveOf: r.RedriveOf,
	}
	if r.RedrivenAs != "" {
		m.Redriven = &domain.MessageRedriven{RedrivenAs: r.RedrivenAs}
	}
	if r.Route != nil {
		m.Routing = &domain.RouteDecision{RouteID: r.Route.RouteID, Provider: r.Route.Provider, Reason: r.Route.Reason}
		m.Provider = r.Route.Provider
	}
	if r.Failure != nil {
		f := *r.Failure
		m.Failure = &f
	}
	return m
}

// messageColumns is the column list every read of read_messages selects,
// in scanMessage's order.
const messageColumns = `message_id, account_id, order_id, idx, to_number, country, sender, encoding, segments,
    price_micros, currency, state, attempt, lifecycle_state, current_attempt, next_attempt, not_before,
    route_id, provider, route_reason, provider_message_id, failure,
    accepted_at, queued_at, routed_at, submitted_at, delivered_at, failed_at, retried_at, expires_at, version, body,
    send_at, canceled_at, redrive_of, redriven_as`

func scanMessage(row pgx.CollectableRow) (Message, error) {
	var m Message
	var lifecycle string
	var notBefore, queued, routed, submitted, delivered, failed, retried, sendAt, canceled *time.Time
	var routeID, provider, reason, pmid, redriveOf, redrivenAs *string
	var failure []byte
	err := row.Scan(&m.ID, &m.AccountID, &m.OrderID, &m.Index, &m.To, &m.Country, &m.From, &m.Encoding, &m.Segments,
		&m.Price.AmountMicros, &m.Price.Currency, &m.State, &m.Attempt, &lifecycle, &m.currentAttempt, &m.nextAttempt, &notBefore,
		&routeID, &provider, &reason, &pmid, &failure,
		&m.AcceptedAt, &queued, &routed, &submitted, &delivered, &failed, &retried, &m.ExpiresAt, &m.Version, &m.Body,
		&sendAt, &canceled, &redriveOf, &redrivenAs)
	if err != nil {
		return m, err
	}
	m.lifecycle = domain.MessageState(lifecycle)
	m.notBefore, m.QueuedAt, m.RoutedAt, m.SubmittedAt = deref(notBefore), deref(queued), deref(routed), deref(submitted)
	m.DeliveredAt, m.FailedAt, m.RetriedAt = deref(delivered), deref(failed), deref(retried)
	m.SendAt, m.CanceledAt = deref(sendAt), deref(canceled)
	if routeID != nil || provider != nil {
		m.Route = &Route{RouteID: derefS(routeID), Provider: derefS(provider), Reason: derefS(reason)}
	}
	m.ProviderMessageID = derefS(pmid)
	m.RedriveOf, m.RedrivenAs = derefS(redriveOf), derefS(redrivenAs)
	if failure != nil {
		m.Failure = &domain.Failure{}
		if err := json.Unmarshal(failure, m.Failure); err != nil {
			return m, fmt.Errorf("message %s: failure: %w", m.ID, err)
		}
	}
	m.AcceptedAt, m.ExpiresAt = m.AcceptedAt.UTC(), m.ExpiresAt.UTC()
	return m, nil
}

// stored is t as PostgreSQL keeps it: UTC, microseconds. Folding from the
// events (nanoseconds, as written) and reading a row must agree, so every
// time a read model keeps or computes with (elapsedMillis) goes through it.
func stored(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func deref(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}

func derefS(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

func timeOrNil(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func stringOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
