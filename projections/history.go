package projections

import (
	"context"
	"encoding/json"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// StoredEvent is an event exactly as the store holds it, for audit: its
// data and metadata are the stored JSON, not a decoding of them.
type StoredEvent struct {
	Position      int64
	Stream        string
	Version       int
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	AccountID     string
	Data          json.RawMessage
	Metadata      json.RawMessage
	RecordedAt    time.Time
	PrevHash      []byte
	Hash          []byte
}

// History is a stream's full history and whether its hash chain holds.
type History struct {
	Events []StoredEvent
	// ChainIntact is false when any event's hash or link does not match;
	// Problems says which.
	ChainIntact bool
	Problems    []string
}

const historySQL = `SELECT global_position, stream_id, stream_version, event_id, type, schema_version, account_id,
    data, metadata, recorded_at, prev_hash, hash
FROM events WHERE stream_id = $1 ORDER BY stream_version`

// MessageHistory returns a message's events from the store, in order, with
// its hash chain checked.
func MessageHistory(ctx context.Context, q eventstore.Querier, t Tenant, id string) (History, error) {
	return streamHistory(ctx, q, t, domain.MessageStream(id))
}

func streamHistory(ctx context.Context, q eventstore.Querier, t Tenant, stream string) (History, error) {
	rows, err := q.Query(ctx, historySQL, stream)
	if err != nil {
		return History{}, err
	}
	evs, err := pgx.CollectRows(rows, scanStoredEvent)
	if err != nil {
		return History{}, err
	}
	if len(evs) == 0 || !t.Sees(ownerOf(evs[0].Type, evs[0].SchemaVersion, evs[0].Data, evs[0].AccountID)) {
		return History{}, ErrNotFound
	}
	problems := chainProblems(evs)
	return History{Events: evs, ChainIntact: len(problems) == 0, Problems: problems}, nil
}

// scanStoredEvent reads a row of historySQL's columns.
func scanStoredEvent(r pgx.CollectableRow) (StoredEvent, error) {
	var e StoredEvent
	err := r.Scan(&e.Position, &e.Stream, &e.Version, &e.ID, &e.Type, &e.SchemaVersion, &e.AccountID,
		&e.Data, &e.Metadata, &e.RecordedAt, &e.PrevHash, &e.Hash)
	e.RecordedAt = e.RecordedAt.UTC()
	return e, err
}

// ownerOf is the account a stream belongs to, read from its first event:
// the account its opening event names, else the event row's account.
func ownerOf(typ string, schema int, data []byte, column string) string {
	ev, err := domain.Decode(typ, schema, data)
	if err != nil {
		return column
	}
	switch e := ev.(type) {
	case domain.MessageAccepted:
		return e.AccountID
	case domain.OrderAccepted:
		return e.AccountID
	case domain.AccountOpened:
		return e.AccountID
	}
	return column
}

// MessageAsOf folds a message's events recorded up to at (all of them when
// at is zero) and shows the result exactly as the read model would have.
// A message with no event by then is ErrNotFound.
func MessageAsOf(ctx context.Context, q eventstore.Querier, t Tenant, id string, at time.Time) (Message, error) {
	evs, err := eventstore.ReadStream(ctx, q, domain.MessageStream(id), 1)
	if err != nil {
		return Message{}, err
	}
	if len(evs) == 0 || !t.Sees(ownerOf(evs[0].Type, evs[0].SchemaVersion, evs[0].Data, evs[0].AccountID)) {
		return Message{}, ErrNotFound
	}
	var agg domain.Message
	for _, e := range evs {
		if !at.IsZero() && e.RecordedAt.After(at) {
			break
		}
		_, _ = foldMessageEvent(&agg, e)
	}
	if agg.ID == "" {
		return Message{}, ErrNotFound
	}
	return messageOf(&agg), nil
}

// foldMessageEvent applies a stored event to a message the way the
// projector does: an event the domain refuses is consumed (the version
// moves past it) but changes nothing, and the refusal is returned.
func foldMessageEvent(agg *domain.Message, e eventstore.RecordedEvent) (domain.Event, error) {
	prev := *agg
	ev, err := e.Decode()
	if err == nil {
		err = agg.Apply(ev)
	}
	if err != nil {
		*agg = prev
		agg.Version = e.Version
		return nil, err
	}
	return ev, nil
}
