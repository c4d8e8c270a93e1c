package domain

import "strings"

// Stream names. Order and message ids are ULIDs, account ids too; a stream
// per aggregate keeps each history short (a 100,000-message order is
// 100,001 short streams, not one long one). A stream's name is its kind, a
// dash and its aggregate's id; the functions below are the only place that
// spells it, in either direction.
const (
	KindOrder   = "order"
	KindMessage = "message"
	KindAccount = "account"
)

// OrderStream is the stream of the order id.
func OrderStream(id string) string { return KindOrder + "-" + id }

// MessageStream is the stream of the message id.
func MessageStream(id string) string { return KindMessage + "-" + id }

// AccountStream is the stream of the account id.
func AccountStream(id string) string { return KindAccount + "-" + id }

// OrderIDOf is the order id of an order stream; ok is false for any other
// stream.
func OrderIDOf(stream string) (id string, ok bool) { return idOf(stream, KindOrder+"-") }

// MessageIDOf is the message id of a message stream; ok is false for any
// other stream.
func MessageIDOf(stream string) (id string, ok bool) { return idOf(stream, KindMessage+"-") }

// AccountIDOf is the account id of an account stream; ok is false for any
// other stream.
func AccountIDOf(stream string) (id string, ok bool) { return idOf(stream, KindAccount+"-") }

// SplitStream splits a stream name into its kind (KindOrder, KindMessage or
// KindAccount) and its aggregate's id; ok is false for a name that is none
// of these kinds' (an empty id included).
func SplitStream(stream string) (kind, id string, ok bool) {
	kind, id, ok = strings.Cut(stream, "-")
	switch {
	case !ok || id == "":
		return "", "", false
	case kind == KindOrder, kind == KindMessage, kind == KindAccount:
		return kind, id, true
	}
	return "", "", false
}

func idOf(stream, prefix string) (string, bool) {
	id, ok := strings.CutPrefix(stream, prefix)
	if !ok || id == "" {
		return "", false
	}
	return id, true
}
