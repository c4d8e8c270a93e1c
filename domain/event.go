package domain

import (
	"encoding/json"
	"errors"
	"fmt"

	jsonv2 "github.com/go-json-experiment/json"
)

// Event is an immutable fact appended to a stream. Every concrete event is
// one Go type with a stable type name (its Go name) and a schema version.
//
// Never change the meaning of a stored event: to evolve one, add a new
// schema version and teach Decode to upcast the old one.
type Event interface {
	EventType() string
	SchemaVersion() int
}

// ErrUnknownEvent is returned when a stored event type or version has no
// decoder in this build.
var ErrUnknownEvent = errors.New("unknown event type")

// decoders maps an event type name to a function that decodes a stored
// payload of a given schema version into its current Go value. It is
// written once, here, and only read afterwards.
var decoders = map[string]func(version int, data []byte) (Event, error){
	"OrderAccepted":    decodeV1[OrderAccepted],
	"OrderCompleted":   decodeV1[OrderCompleted],
	"MessageAccepted":  decodeV1[MessageAccepted],
	"MessageQueued":    decodeV1[MessageQueued],
	"MessageRouted":    decodeV1[MessageRouted],
	"MessageSubmitted": decodeV1[MessageSubmitted],
	"MessageDelivered": decodeV1[MessageDelivered],
	"MessageFailed":    decodeV1[MessageFailed],
	"MessageRetried":   decodeV1[MessageRetried],
	"AccountOpened":    decodeV1[AccountOpened],
	"AccountCredited":  decodeV1[AccountCredited],
	"BalanceReserved":  decodeV1[BalanceReserved],
	"BalanceCharged":   decodeV1[BalanceCharged],
	"BalanceReleased":  decodeV1[BalanceReleased],
	"APIKeyIssued":     decodeV1[APIKeyIssued],
}

// EventTypes lists every event type this build can decode, for
// documentation, the OpenAPI document and subject filters.
func EventTypes() []string {
	out := make([]string, 0, len(decoders))
	for k := range decoders {
		out = append(out, k)
	}
	return out
}

// Decode turns a stored payload back into its Go event, upcasting older
// schema versions to the current one.
func Decode(eventType string, schemaVersion int, data []byte) (Event, error) {
	dec, ok := decoders[eventType]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUnknownEvent, eventType)
	}
	return dec(schemaVersion, data)
}

// Encode marshals an event's payload for storage.
func Encode(e Event) ([]byte, error) {
	return json.Marshal(e)
}

func decodeV1[T Event](version int, data []byte) (Event, error) {
	var v T
	if version != 1 {
		return nil, fmt.Errorf("%w: %s version %d", ErrUnknownEvent, v.EventType(), version)
	}
	// json v2 (the Go team's successor of encoding/json, outside
	// GOEXPERIMENT) decodes these a few times faster; every consumer of
	// the tail decodes every event it reads, so it shows.
	if err := jsonv2.Unmarshal(data, &v, jsonv2.RejectUnknownMembers(false)); err != nil {
		return nil, fmt.Errorf("decode %s: %w", v.EventType(), err)
	}
	return v, nil
}

// Stream names. Order and message ids are ULIDs, account ids too; a stream
// per aggregate keeps each history short (a 100,000-message order is
// 100,001 short streams, not one long one).
func OrderStream(id string) string   { return "order-" + id }
func MessageStream(id string) string { return "message-" + id }
func AccountStream(id string) string { return "account-" + id }
