package domain

import "testing"

func TestStreamNamesRoundTrip(t *testing.T) {
	const id = "01JDQ3ZK8Y7M2V4N6P8R0T2W4X"
	for _, tt := range []struct {
		kind   string
		format func(string) string
		parse  func(string) (string, bool)
	}{
		{KindOrder, OrderStream, OrderIDOf},
		{KindMessage, MessageStream, MessageIDOf},
		{KindAccount, AccountStream, AccountIDOf},
	} {
		stream := tt.format(id)
		if want := tt.kind + "-" + id; stream != want {
			t.Errorf("%s stream = %q, want %q", tt.kind, stream, want)
		}
		if got, ok := tt.parse(stream); !ok || got != id {
			t.Errorf("%s id of %q = %q, %v; want %q, true", tt.kind, stream, got, ok, id)
		}
		if kind, got, ok := SplitStream(stream); !ok || kind != tt.kind || got != id {
			t.Errorf("SplitStream(%q) = %q, %q, %v; want %q, %q, true", stream, kind, got, ok, tt.kind, id)
		}
	}
}

func TestStreamIDOfRefusesOtherStreams(t *testing.T) {
	for _, stream := range []string{"", "message-", "message", "order-1", "account-1", "Message-1", "messages-1", "x-message-1"} {
		if id, ok := MessageIDOf(stream); ok {
			t.Errorf("MessageIDOf(%q) = %q, true; want false", stream, id)
		}
	}
	if id, ok := OrderIDOf("message-1"); ok {
		t.Errorf("OrderIDOf(message-1) = %q, true", id)
	}
	if id, ok := AccountIDOf("order-1"); ok {
		t.Errorf("AccountIDOf(order-1) = %q, true", id)
	}
	for _, stream := range []string{"", "-1", "order-", "orders-1", "webhook-1", "order"} {
		if kind, id, ok := SplitStream(stream); ok {
			t.Errorf("SplitStream(%q) = %q, %q, true; want false", stream, kind, id)
		}
	}
}
