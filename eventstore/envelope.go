package eventstore

import "encoding/json"

// AppendEnvelope appends the JSON Envelope of e, exactly as the relay
// publishes it (docs/events.md): the status callbacks carry the same body
// as the events stream.
func AppendEnvelope(b []byte, e *RecordedEvent) ([]byte, error) {
	meta, err := json.Marshal(e.Metadata)
	if err != nil {
		return b, err
	}
	return appendEnvelope(b, e, e.ID.String(), meta), nil
}
