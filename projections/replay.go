package projections

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// Step is one event of a replayed timeline.
type Step struct {
	Position   int64
	Stream     string
	Version    int
	Type       string
	RecordedAt time.Time
	// SincePrevious is the time since the previous event of the same
	// stream was recorded (0 for a stream's first event): how long each
	// lifecycle step took.
	SincePrevious time.Duration
	// Summary is the event's essential fields, "key=value …".
	Summary string
	// Actor is who caused the event: an API key id, "cli:<user>", a
	// worker or a provider.
	Actor string
	Data  json.RawMessage
}

// ReplayMessage returns a message's history as a timeline.
func ReplayMessage(ctx context.Context, q eventstore.Querier, t Tenant, id string) ([]Step, error) {
	evs, err := eventstore.ReadStream(ctx, q, domain.MessageStream(id), 1)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 || !t.Sees(ownerOf(evs[0].Type, evs[0].SchemaVersion, evs[0].Data, evs[0].AccountID)) {
		return nil, ErrNotFound
	}
	return timeline(evs), nil
}

const (
	// The order's messages were accepted in the order's own transaction
	// (handlers/commands/orders; docs/architecture.md section 1), so they are the
	// MessageAccepted events that share its transaction id: an index
	// range, not a search.
	orderMessageStreamsSQL = `SELECT stream_id FROM events
WHERE xid = $1 AND type = 'MessageAccepted' AND data->>'order_id' = $2 ORDER BY global_position`
	// The account's money events for the order, from its acceptance on.
	orderMoneySQL = `SELECT stream_version FROM events
WHERE stream_id = $1 AND global_position >= $2 AND data->>'order_id' = $3
  AND type IN ('BalanceReserved', 'BalanceCharged', 'BalanceReleased')`
)

// ReplayOrder returns an order's history as one timeline: the order
// stream, the account's money events for the order and every message's
// stream, in the order they were recorded.
func ReplayOrder(ctx context.Context, q eventstore.Querier, t Tenant, id string) ([]Step, error) {
	order, err := eventstore.ReadStream(ctx, q, domain.OrderStream(id), 1)
	if err != nil {
		return nil, err
	}
	if len(order) == 0 {
		return nil, ErrNotFound
	}
	first := order[0]
	owner := ownerOf(first.Type, first.SchemaVersion, first.Data, first.AccountID)
	if !t.Sees(owner) {
		return nil, ErrNotFound
	}
	all := append([]eventstore.RecordedEvent(nil), order...)
	rows, err := q.Query(ctx, orderMessageStreamsSQL, first.XID, id)
	if err != nil {
		return nil, err
	}
	streams, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	for len(streams) > 0 {
		n := min(len(streams), 1000)
		got, err := eventstore.ReadStreams(ctx, q, streams[:n])
		if err != nil {
			return nil, err
		}
		for _, s := range streams[:n] {
			all = append(all, got[s]...)
		}
		streams = streams[n:]
	}
	account := domain.AccountStream(owner)
	rows, err = q.Query(ctx, orderMoneySQL, account, first.Position, id)
	if err != nil {
		return nil, err
	}
	versions, err := pgx.CollectRows(rows, pgx.RowTo[int32])
	if err != nil {
		return nil, err
	}
	if len(versions) > 0 {
		sort.Slice(versions, func(i, j int) bool { return versions[i] < versions[j] })
		evs, err := eventstore.ReadStream(ctx, q, account, int(versions[0]))
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			for _, v := range versions {
				if int32(e.Version) == v {
					all = append(all, e)
				}
			}
		}
	}
	return timeline(all), nil
}

// ReplayAccount returns an account's own actions as a timeline: its
// opening, its credits and its keys issued and revoked, each with its
// actor and reason. Not the money events of its orders: those are as many
// as its orders, and replay order shows them where they belong.
func ReplayAccount(ctx context.Context, q eventstore.Querier, t Tenant, id string) ([]Step, error) {
	if !t.Sees(id) {
		return nil, ErrNotFound
	}
	evs, err := eventstore.ReadStreamTypes(ctx, q, domain.AccountStream(id), domain.TypesOf(domain.AccountOpened{},
		domain.AccountCredited{}, domain.BalanceCredited{}, domain.APIKeyIssued{}, domain.APIKeyRevoked{}))
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return timeline(evs), nil
}

// timeline orders events by when they were recorded (then by position)
// and summarises each.
func timeline(evs []eventstore.RecordedEvent) []Step {
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].RecordedAt.Equal(evs[j].RecordedAt) {
			return evs[i].RecordedAt.Before(evs[j].RecordedAt)
		}
		return evs[i].Position < evs[j].Position
	})
	last := map[string]time.Time{}
	out := make([]Step, len(evs))
	for i, e := range evs {
		s := Step{Position: e.Position, Stream: e.StreamID, Version: e.Version, Type: e.Type,
			RecordedAt: e.RecordedAt.UTC(), Actor: e.Metadata.Actor, Data: json.RawMessage(e.Data)}
		if prev, ok := last[e.StreamID]; ok {
			s.SincePrevious = e.RecordedAt.Sub(prev)
		}
		last[e.StreamID] = e.RecordedAt
		if ev, err := e.Decode(); err == nil {
			s.Summary = Summarize(ev)
		} else {
			s.Summary = "cannot decode: " + err.Error()
		}
		out[i] = s
	}
	return out
}

// Summarize renders an event's essential fields as "key=value …".
func Summarize(ev domain.Event) string {
	var kv []any
	switch e := ev.(type) {
	case domain.OrderAccepted:
		kv = []any{"messages", e.MessageCount, "price", e.Price, "validity", time.Duration(e.ValiditySeconds) * time.Second,
			"send_at", timeOrEmpty(e.SendAt)}
	case domain.OrderCompleted:
		kv = []any{"delivered", e.Counts.Delivered, "failed", e.Counts.Failed, "expired", e.Counts.Expired,
			"canceled", e.Counts.Canceled, "charged", e.Charged, "refunded", e.Refunded}
	case domain.MessageAccepted:
		kv = []any{"to", e.To, "segments", e.Segments, "encoding", e.Encoding, "price", e.Price, "expires", e.ExpiresAt.UTC().Format(time.RFC3339),
			"send_at", timeOrEmpty(e.SendAt), "redrive_of", e.RedriveOf}
	case domain.MessageQueued:
		kv = []any{"attempt", e.Attempt, "job", e.JobID}
	case domain.MessageRouted:
		kv = []any{"attempt", e.Attempt, "provider", e.Route.Provider, "route", e.Route.RouteID, "reason", e.Route.Reason}
	case domain.MessageSubmitted:
		kv = []any{"attempt", e.Attempt, "provider", e.Provider, "provider_message_id", e.ProviderMessageID,
			"latency", time.Duration(e.LatencyMillis) * time.Millisecond}
	case domain.MessageDelivered:
		kv = []any{"attempt", e.Attempt, "provider", e.Provider, "provider_message_id", e.ProviderMessageID}
	case domain.MessageFailed:
		kv = []any{"attempt", e.Attempt, "code", e.Failure.Code, "stage", e.Failure.Stage, "provider", e.Failure.Provider, "reason", e.Failure.Reason}
	case domain.MessageRetried:
		kv = []any{"attempt", e.Attempt, "next_attempt", e.NextAttempt, "not_before", e.NotBefore.UTC().Format(time.RFC3339),
			"code", e.Failure.Code, "stage", e.Failure.Stage, "provider", e.Failure.Provider}
	case domain.MessageCanceled:
		kv = []any{"attempt", e.Attempt, "by", e.Actor, "reason", e.Reason}
	case domain.MessageRedriven:
		kv = []any{"as", e.RedrivenAs, "order", e.OrderID, "by", e.Actor, "reason", e.Reason}
	case domain.AccountOpened:
		kv = []any{"name", e.Name, "currency", e.Currency}
	case domain.AccountCredited:
		kv = []any{"amount", e.Amount, "balance_after", e.BalanceAfter}
	case domain.BalanceReserved:
		kv = []any{"amount", e.Amount, "messages", e.MessageCount, "balance_after", e.BalanceAfter, "reserved_after", e.ReservedAfter}
	case domain.BalanceCharged:
		kv = []any{"amount", e.Amount, "messages", len(e.MessageIDs), "reserved_after", e.ReservedAfter}
	case domain.BalanceReleased:
		kv = []any{"amount", e.Amount, "messages", len(e.MessageIDs), "reason", e.Reason, "balance_after", e.BalanceAfter}
	case domain.BalanceCredited:
		kv = []any{"amount", e.Amount, "reason", e.Reason, "balance_after", e.BalanceAfter}
	case domain.APIKeyIssued:
		kv = []any{"key", e.KeyID, "scopes", strings.Join(e.Scopes, ","), "reason", e.Reason}
	case domain.APIKeyRevoked:
		kv = []any{"key", e.KeyID, "reason", e.Reason}
	}
	var b strings.Builder
	for i := 0; i+1 < len(kv); i += 2 {
		if n, ok := kv[i+1].(int); ok && n == 0 && kv[i] == "canceled" {
			continue // an order without canceled messages says nothing of them
		}
		v := fmt.Sprint(kv[i+1])
		if v == "" || v == "0s" {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		if strings.ContainsAny(v, " \t") {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, "%s=%s", kv[i], v)
	}
	return b.String()
}

// timeOrEmpty is t in RFC 3339, or "" (left out of a summary) when zero.
func timeOrEmpty(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}
