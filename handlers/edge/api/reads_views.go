package api

import (
	"encoding/json"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/projections"
)

// The JSON shapes of the read side (documented in openapi.json). A stage
// not reached is null, never omitted, so clients see every field.

type messageView struct {
	MessageID         string       `json:"message_id"`
	OrderID           string       `json:"order_id"`
	AccountID         string       `json:"account_id"`
	Index             int          `json:"index"`
	To                string       `json:"to"`
	From              string       `json:"from,omitempty"`
	Country           string       `json:"country"`
	Encoding          string       `json:"encoding"`
	Segments          int          `json:"segments"`
	Body              string       `json:"body"`
	Price             domain.Money `json:"price"`
	State             string       `json:"state"`
	Attempt           int          `json:"attempt"`
	Route             *routeView   `json:"route"`
	ProviderMessageID *string      `json:"provider_message_id"`
	Failure           *failureView `json:"failure"`
	Timestamps        messageTimes `json:"timestamps"`
	ExpiresAt         timestamp    `json:"expires_at"`
	// SendAt is the send_at the order asked for, null when it goes at once.
	SendAt *timestamp `json:"send_at"`
	// RedriveOf is the failed message this one sends again, RedrivenAs
	// the copy this failed one was sent again as; null for none.
	RedriveOf  *string        `json:"redrive_of"`
	RedrivenAs *string        `json:"redriven_as"`
	Version    int            `json:"version"`
	AsOf       *timestamp     `json:"as_of,omitempty"`
	Links      map[string]any `json:"links"`
}

type routeView struct {
	RouteID  string `json:"route_id"`
	Provider string `json:"provider"`
	Reason   string `json:"reason"`
}

type failureView struct {
	Code         string `json:"code"`
	Reason       string `json:"reason"`
	Stage        string `json:"stage"`
	Permanent    bool   `json:"permanent"`
	Provider     string `json:"provider,omitempty"`
	ProviderCode string `json:"provider_code,omitempty"`
}

type messageTimes struct {
	AcceptedAt  *timestamp `json:"accepted_at"`
	QueuedAt    *timestamp `json:"queued_at"`
	RoutedAt    *timestamp `json:"routed_at"`
	SubmittedAt *timestamp `json:"submitted_at"`
	DeliveredAt *timestamp `json:"delivered_at"`
	FailedAt    *timestamp `json:"failed_at"`
	RetriedAt   *timestamp `json:"retried_at"`
	CanceledAt  *timestamp `json:"canceled_at"`
}

func messageViewOf(m *projections.Message) messageView {
	v := messageView{MessageID: m.ID, OrderID: m.OrderID, AccountID: m.AccountID, Index: m.Index, To: m.To, From: m.From,
		Country: m.Country, Encoding: m.Encoding, Segments: m.Segments, Body: m.Body, Price: m.Price, State: m.State, Attempt: m.Attempt,
		Timestamps: messageTimes{AcceptedAt: at(m.AcceptedAt), QueuedAt: at(m.QueuedAt), RoutedAt: at(m.RoutedAt),
			SubmittedAt: at(m.SubmittedAt), DeliveredAt: at(m.DeliveredAt), FailedAt: at(m.FailedAt), RetriedAt: at(m.RetriedAt),
			CanceledAt: at(m.CanceledAt)},
		ExpiresAt: timestamp(m.ExpiresAt), SendAt: at(m.SendAt), Version: m.Version,
		Links: map[string]any{"events": "/v1/messages/" + m.ID + "/events", "order": "/v1/orders/" + m.OrderID}}
	if m.Route != nil {
		v.Route = &routeView{RouteID: m.Route.RouteID, Provider: m.Route.Provider, Reason: m.Route.Reason}
	}
	if m.ProviderMessageID != "" {
		v.ProviderMessageID = &m.ProviderMessageID
	}
	if m.RedriveOf != "" {
		v.RedriveOf = &m.RedriveOf
		v.Links["redrive_of"] = "/v1/messages/" + m.RedriveOf
	}
	if m.RedrivenAs != "" {
		v.RedrivenAs = &m.RedrivenAs
		v.Links["redriven_as"] = "/v1/messages/" + m.RedrivenAs
	}
	if f := m.Failure; f != nil {
		v.Failure = &failureView{Code: f.Code, Reason: f.Reason, Stage: string(f.Stage), Permanent: f.Permanent,
			Provider: f.Provider, ProviderCode: f.ProviderCode}
	}
	return v
}

type pageView struct {
	Messages   []messageView `json:"messages"`
	NextCursor *string       `json:"next_cursor"`
}

func pageViewOf(p projections.MessagePage) pageView {
	v := pageView{Messages: make([]messageView, len(p.Messages))}
	for i := range p.Messages {
		v.Messages[i] = messageViewOf(&p.Messages[i])
	}
	if p.Next != "" {
		v.NextCursor = &p.Next
	}
	return v
}

type orderPageView struct {
	Orders     []orderView `json:"orders"`
	NextCursor *string     `json:"next_cursor"`
}

type orderView struct {
	OrderID         string       `json:"order_id"`
	AccountID       string       `json:"account_id"`
	State           string       `json:"state"`
	MessageCount    int          `json:"message_count"`
	Counts          countsView   `json:"counts"`
	Price           domain.Money `json:"price"`
	Charged         domain.Money `json:"charged"`
	Refunded        domain.Money `json:"refunded"`
	ValiditySeconds int          `json:"validity_seconds"`
	ExpiresAt       *timestamp   `json:"expires_at"`
	SendAt          *timestamp   `json:"send_at"`
	Timestamps      orderTimes   `json:"timestamps"`
	// Metadata is the client's object from the order, null when it sent
	// none.
	Metadata json.RawMessage `json:"metadata"`
	Links    map[string]any  `json:"links"`
}

type countsView struct {
	Scheduled int `json:"scheduled"`
	Accepted  int `json:"accepted"`
	Queued    int `json:"queued"`
	Routed    int `json:"routed"`
	Submitted int `json:"submitted"`
	Delivered int `json:"delivered"`
	Failed    int `json:"failed"`
	Canceled  int `json:"canceled"`
	Expired   int `json:"expired"`
}

type orderTimes struct {
	AcceptedAt  *timestamp `json:"accepted_at"`
	StartedAt   *timestamp `json:"started_at"`
	CompletedAt *timestamp `json:"completed_at"`
}

func orderViewOf(o *projections.Order) orderView {
	c := o.Counts
	return orderView{OrderID: o.ID, AccountID: o.AccountID, State: string(o.State()), MessageCount: o.MessageCount,
		Counts: countsView{Scheduled: c.Scheduled, Accepted: c.Accepted, Queued: c.Queued, Routed: c.Routed, Submitted: c.Submitted,
			Delivered: c.Delivered, Failed: c.Failed, Canceled: c.Canceled, Expired: c.Expired},
		Price: o.Price, Charged: o.Charged, Refunded: o.Refunded, ValiditySeconds: o.ValiditySeconds, ExpiresAt: at(o.ExpiresAt),
		SendAt:     at(o.SendAt),
		Timestamps: orderTimes{AcceptedAt: at(o.AcceptedAt), StartedAt: at(o.StartedAt), CompletedAt: at(o.CompletedAt)},
		Metadata:   o.Metadata,
		Links:      map[string]any{"messages": "/v1/orders/" + o.ID + "/messages"}}
}

// eventView is one stored event, as the history, pull and stream
// endpoints show it.
type eventView struct {
	Position      int64           `json:"position"`
	Stream        string          `json:"stream"`
	Version       int             `json:"version"`
	ID            string          `json:"id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	RecordedAt    time.Time       `json:"recorded_at"`
	Data          json.RawMessage `json:"data"`
	Metadata      json.RawMessage `json:"metadata"`
}

type historyView struct {
	Events    []eventView `json:"events"`
	HashChain string      `json:"hash_chain"`
	Problems  []string    `json:"problems,omitempty"`
}

type accountEventsView struct {
	Events     []eventView `json:"events"`
	NextCursor *string     `json:"next_cursor"`
}

type accountSummaryView struct {
	AccountID string       `json:"account_id"`
	Name      string       `json:"name"`
	Currency  string       `json:"currency"`
	Balance   domain.Money `json:"balance"`
	Reserved  domain.Money `json:"reserved"`
	Credited  domain.Money `json:"credited"`
	Spent     domain.Money `json:"spent"`
	Refunded  domain.Money `json:"refunded"`
	OpenedAt  timestamp    `json:"opened_at"`
	Version   int          `json:"version"`
}

type providerStatsView struct {
	Since     timestamp      `json:"since"`
	Until     timestamp      `json:"until"`
	Providers []providerView `json:"providers"`
}

type providerView struct {
	Provider        string         `json:"provider"`
	Submitted       int64          `json:"submitted"`
	Delivered       int64          `json:"delivered"`
	Failed          int64          `json:"failed"`
	Retried         int64          `json:"retried"`
	SubmitLatency   latencyView    `json:"submit_latency_ms"`
	DeliveryLatency latencyView    `json:"delivery_latency_ms"`
	Failures        []failureCount `json:"failures"`
}

type latencyView struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	// Percentiles are histogram bucket upper bounds; null means beyond
	// the last bucket (60 s).
	P50 *int64 `json:"p50"`
	P95 *int64 `json:"p95"`
	P99 *int64 `json:"p99"`
}

type failureCount struct {
	Code      string `json:"code"`
	Stage     string `json:"stage"`
	Permanent bool   `json:"permanent"`
	Count     int64  `json:"count"`
}

func providerViewOf(p projections.ProviderStats) providerView {
	lat := func(l projections.Latency) latencyView {
		bound := func(v int64) *int64 {
			if v < 0 {
				return nil
			}
			return &v
		}
		return latencyView{Count: l.Count, Mean: l.MeanMillis, P50: bound(l.P50), P95: bound(l.P95), P99: bound(l.P99)}
	}
	v := providerView{Provider: p.Provider, Submitted: p.Submitted, Delivered: p.Delivered, Failed: p.Failed, Retried: p.Retried,
		SubmitLatency: lat(p.SubmitLatency), DeliveryLatency: lat(p.DeliveryLatency), Failures: []failureCount{}}
	for _, f := range p.Failures {
		v.Failures = append(v.Failures, failureCount{Code: f.Code, Stage: f.Stage, Permanent: f.Permanent, Count: f.Count})
	}
	return v
}
