package eventstore

import (
	"encoding/json"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Headers the relay sets on every message besides Nats-Msg-Id (the event
// id). The aggregate id travels here and in the body, never in the subject:
// a subject per message id would grow the broker's subject state without
// bound.
const (
	HeaderStreamID = "Afterok-Stream-Id"
	HeaderPosition = "Afterok-Position"
	HeaderType     = "Afterok-Type"
)

// Envelope is the JSON body of every message the relay publishes
// (docs/events.md describes it for subscribers). Data and Metadata are the
// stored JSON, unchanged.
type Envelope struct {
	Position      int64           `json:"position"`
	StreamID      string          `json:"stream_id"`
	Version       int             `json:"version"`
	EventID       uuid.UUID       `json:"event_id"`
	Type          string          `json:"type"`
	SchemaVersion int             `json:"schema_version"`
	AccountID     string          `json:"account_id"`
	Data          json.RawMessage `json:"data"`
	Metadata      json.RawMessage `json:"metadata"`
	RecordedAt    time.Time       `json:"recorded_at"`
}

// aggregate returns the aggregate a stream belongs to: the part of its id
// before the first '-' ("order", "message", "account"), or the whole id
// when it has none.
func aggregate(streamID string) string {
	a, _, _ := strings.Cut(streamID, "-")
	return a
}

// message builds the NATS message of e. prev is the id of the event
// published just before it in this window ("" for the first): the server
// stores the message only if the stream's last message is that event. On
// a replicated stream it is not sent (see the relay's contract).
func (r *Relay) message(e *RecordedEvent, id, prev string) (*nats.Msg, error) {
	meta, err := json.Marshal(e.Metadata)
	if err != nil {
		return nil, err
	}
	h := nats.Header{
		jetstream.MsgIDHeader: {id},
		HeaderStreamID:        {e.StreamID},
		HeaderPosition:        {strconv.FormatInt(e.Position, 10)},
		HeaderType:            {e.Type},
	}
	if prev != "" && r.cfg.Replicas <= 1 {
		h[jetstream.ExpectedLastMsgIDHeader] = []string{prev}
	}
	return &nats.Msg{
		Subject: r.cfg.Names.EventSubject(e.AccountID, aggregate(e.StreamID), e.Type),
		Header:  h,
		Data:    appendEnvelope(make([]byte, 0, 256+len(e.Data)+len(meta)), e, id, meta),
	}, nil
}

// appendEnvelope encodes the Envelope of e by hand: it runs once per event
// on the relay's hot path, and the stored JSON goes through as it is
// (encoding/json would re-validate and re-indent it).
func appendEnvelope(b []byte, e *RecordedEvent, id string, meta []byte) []byte {
	b = append(b, `{"position":`...)
	b = strconv.AppendInt(b, e.Position, 10)
	b = append(b, `,"stream_id":`...)
	b = appendJSONString(b, e.StreamID)
	b = append(b, `,"version":`...)
	b = strconv.AppendInt(b, int64(e.Version), 10)
	b = append(b, `,"event_id":"`...)
	b = append(b, id...)
	b = append(b, `","type":`...)
	b = appendJSONString(b, e.Type)
	b = append(b, `,"schema_version":`...)
	b = strconv.AppendInt(b, int64(e.SchemaVersion), 10)
	b = append(b, `,"account_id":`...)
	b = appendJSONString(b, e.AccountID)
	b = append(b, `,"data":`...)
	if len(e.Data) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, e.Data...)
	}
	b = append(b, `,"metadata":`...)
	b = append(b, meta...)
	b = append(b, `,"recorded_at":"`...)
	b = e.RecordedAt.UTC().AppendFormat(b, time.RFC3339Nano)
	return append(b, `"}`...)
}

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
