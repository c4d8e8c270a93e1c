package eventstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/bus"
)

// FuzzAppendJSONString holds the hand-written string encoder to
// encoding/json: whatever the input, the output decodes to what
// encoding/json's own encoding decodes to.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "plain", `quote" back\slash`, "ctl \x00\x01\x1f\x7f\n\r\t", "ü€😀", "bad \xff\xfe\xc3 utf8", "\u2028\u2029", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString([]byte("x"), s)
		require.Equal(t, byte('x'), b[0], "appends, does not overwrite")
		var got, want string
		require.NoError(t, json.Unmarshal(b[1:], &got), "invalid JSON %q", b[1:])
		ref, err := json.Marshal(s)
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal(ref, &want))
		require.Equal(t, want, got)
	})
}

func TestEnvelopeDecodesToTheEvent(t *testing.T) {
	e := RecordedEvent{Position: 42, StreamID: `message-01J"x\`, Version: 3, ID: uuid.Must(uuid.NewV7()), Type: "MessageQueued",
		SchemaVersion: 2, AccountID: "acc\t1", Data: []byte(`{"a": [1, 2], "b": "<é>"}`),
		RecordedAt: time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.FixedZone("x", 3600))}
	meta := []byte(`{"actor":"k"}`)
	var env Envelope
	require.NoError(t, json.Unmarshal(appendEnvelope(nil, &e, e.ID.String(), meta), &env))
	require.Equal(t, Envelope{Position: 42, StreamID: e.StreamID, Version: 3, EventID: e.ID, Type: e.Type, SchemaVersion: 2,
		AccountID: e.AccountID, Data: json.RawMessage(e.Data), Metadata: json.RawMessage(meta), RecordedAt: e.RecordedAt.UTC()}, env)
	require.Equal(t, "order", aggregate("order-01J"))
	require.Equal(t, "message", aggregate("message-01J-2"))
	require.Equal(t, "settings", aggregate("settings"))
}

// TestRelayGuardsOrderOnlyOnOneServer: the relay's ordering guard goes on
// every message but a window's first on a one-server stream, and never on
// a replicated one, where nats-server stops the stream on a mismatch.
func TestRelayGuardsOrderOnlyOnOneServer(t *testing.T) {
	e := RecordedEvent{Position: 1, StreamID: "message-01J", ID: uuid.Must(uuid.NewV7()), Type: "MessageQueued"}
	for _, tc := range []struct {
		replicas int
		prev     string
		want     string
	}{
		{0, "", ""}, {1, "", ""}, {1, "prev-id", "prev-id"}, {0, "prev-id", "prev-id"},
		{3, "", ""}, {3, "prev-id", ""},
	} {
		r := &Relay{cfg: RelayConfig{Names: bus.Names{Prefix: "t"}, Replicas: tc.replicas}}
		m, err := r.message(&e, e.ID.String(), tc.prev)
		require.NoError(t, err)
		require.Equal(t, tc.want, m.Header.Get(jetstream.ExpectedLastMsgIDHeader), "replicas %d, prev %q", tc.replicas, tc.prev)
		require.Equal(t, e.ID.String(), m.Header.Get(jetstream.MsgIDHeader))
	}
}
