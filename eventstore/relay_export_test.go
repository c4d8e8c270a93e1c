package eventstore

import "github.com/nats-io/nats.go"

// WithBeforeCheckpoint returns c with a hook that runs after acks and
// before every checkpoint write; an error from it makes Run return at once
// without writing the checkpoint, as a process killed at that point would.
func WithBeforeCheckpoint(c RelayConfig, hook func(to Cursor) error) RelayConfig {
	c.beforeCheckpoint = hook
	return c
}

// RelayMessage is the message the relay publishes for e after an event
// whose id is prev ("" for none).
func RelayMessage(c RelayConfig, e *RecordedEvent, prev string) (*nats.Msg, error) {
	r := &Relay{cfg: c}
	return r.message(e, e.ID.String(), prev)
}
