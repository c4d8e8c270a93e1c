package api

import (
	"encoding/json"
	"time"
)

// timestampLayout is the one way the API writes a time: RFC 3339 in UTC
// with exactly six fractional digits. Six because PostgreSQL keeps
// microseconds, so a time read back from the store looks the same as the
// time the 202 announced; fixed because clients that compare timestamps
// as strings (or parse them with a fixed layout) would otherwise meet
// "…:05Z", "…:05.1Z" and "…:05.123456789Z" from one API.
const timestampLayout = "2006-01-02T15:04:05.000000Z07:00"

// appendTimestamp appends t in timestampLayout, truncated to the
// microsecond as PostgreSQL's timestamptz stores it from pgx.
func appendTimestamp(b []byte, t time.Time) []byte {
	return t.UTC().Truncate(time.Microsecond).AppendFormat(b, timestampLayout)
}

// timestamp is a time.Time that marshals in timestampLayout. Every view
// uses it (or *timestamp, null when a stage was not reached).
type timestamp time.Time

func (t timestamp) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, len(timestampLayout)+2)
	b = append(b, '"')
	b = appendTimestamp(b, time.Time(t))
	return append(b, '"'), nil
}

// at is t as a view shows it: nil (JSON null) when it is zero.
func at(t time.Time) *timestamp {
	if t.IsZero() {
		return nil
	}
	ts := timestamp(t)
	return &ts
}

// MarshalJSON writes the event with recorded_at in timestampLayout.
// eventView keeps a time.Time field because the pull and stream handlers
// build it; the one format is applied here, on the way out.
func (v eventView) MarshalJSON() ([]byte, error) {
	type plain eventView // without this method
	return json.Marshal(struct {
		plain
		RecordedAt timestamp `json:"recorded_at"`
	}{plain(v), timestamp(v.RecordedAt)})
}
