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
	OrderAccepted{}.EventType():    decodeV1[OrderAccepted],
	OrderCompleted{}.EventType():   decodeV1[OrderCompleted],
	MessageAccepted{}.EventType():  decodeV1[MessageAccepted],
	MessageQueued{}.EventType():    decodeV1[MessageQueued],
	MessageRouted{}.EventType():    decodeV1[MessageRouted],
	MessageSubmitted{}.EventType(): decodeV1[MessageSubmitted],
	MessageDelivered{}.EventType(): decodeV1[MessageDelivered],
	MessageFailed{}.EventType():    decodeV1[MessageFailed],
	MessageRetried{}.EventType():   decodeV1[MessageRetried],
	MessageCanceled{}.EventType():  decodeV1[MessageCanceled],
	MessageRedriven{}.EventType():  decodeV1[MessageRedriven],
	AccountOpened{}.EventType():    decodeV1[AccountOpened],
	AccountCredited{}.EventType():  decodeV1[AccountCredited],
	BalanceReserved{}.EventType():  decodeV1[BalanceReserved],
	BalanceCharged{}.EventType():   decodeV1[BalanceCharged],
	BalanceReleased{}.EventType():  decodeV1[BalanceReleased],
	APIKeyIssued{}.EventType():     decodeV1[APIKeyIssued],
	BalanceCredited{}.EventType():  decodeV1[BalanceCredited],
	APIKeyRevoked{}.EventType():    decodeV1[APIKeyRevoked],
	// Webhook endpoints (webhook.go).
	WebhookEndpointCreated{}.EventType():  decodeV1[WebhookEndpointCreated],
	WebhookEndpointUpdated{}.EventType():  decodeV1[WebhookEndpointUpdated],
	WebhookSecretRotated{}.EventType():    decodeV1[WebhookSecretRotated],
	WebhookEndpointDisabled{}.EventType(): decodeV1[WebhookEndpointDisabled],
	WebhookEndpointDeleted{}.EventType():  decodeV1[WebhookEndpointDeleted],
	WebhookReplayRequested{}.EventType():  decodeV1[WebhookReplayRequested],
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

// TypesOf lists the stored type names of the given events, for filters
// that select events by type: a consumer names the Go types it handles,
// never their names as strings, so a renamed type cannot be filtered out
// silently.
func TypesOf(events ...Event) []string {
	out := make([]string, len(events))
	for i, e := range events {
		out[i] = e.EventType()
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
