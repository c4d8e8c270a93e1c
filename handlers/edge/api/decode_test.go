package api

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
)

// TestDecodeRefusesTextTheStoreCannotHold covers input that used to pass
// validation and then fail at commit (jsonb refuses U+0000 and unpaired
// surrogates: a 500, and every order of the same group commit failed with
// it), or was silently changed (invalid UTF-8 replaced with U+FFFD,
// repeated keys resolved to the last, "60" read as a number). Each must be
// refused before anything is written, naming the field.
func TestDecodeRefusesTextTheStoreCannotHold(t *testing.T) {
	const ok = `"to":"+4915112345678","body":"hi"`
	type want struct {
		status int
		code   string
		// for validation_failed: the errors, as "index field code" (index -1: order-level)
		errors []string
		// for invalid_request: a part of the detail
		detail string
	}
	cases := []struct {
		name string
		body string
		want want
	}{
		{"NUL in a body", `{"messages":[{` + ok + `},{"to":"+4915112345678","body":"a\u0000b"}]}`,
			want{422, "validation_failed", []string{"1 body invalid_character"}, ""}},
		{"NUL in a broadcast body", `{"to":["+4915112345678"],"body":"\u0000"}`,
			want{422, "validation_failed", []string{"0 body invalid_character"}, ""}},
		{"invalid UTF-8 in a body", "{\"messages\":[{\"to\":\"+4915112345678\",\"body\":\"caf\xe9\"}]}",
			want{422, "validation_failed", []string{"0 body invalid_utf8"}, ""}},
		{"lone surrogate in a body", `{"messages":[{"to":"+4915112345678","body":"x\ud800"}]}`,
			want{422, "validation_failed", []string{"0 body invalid_utf8"}, ""}},
		{"every bad message is listed", "{\"messages\":[{\"to\":\"+49151123456\xff\",\"body\":\"\\udc00\"},{" + ok + "},{\"to\":\"+49\",\"body\":\"\xc3\"}]}",
			want{422, "validation_failed", []string{"0 to invalid_utf8", "0 body invalid_utf8", "2 to invalid_number", "2 body invalid_utf8"}, ""}},
		{"invalid UTF-8 in a sender", "{\"messages\":[{" + ok + ",\"from\":\"Ac\xffme\"}]}",
			want{422, "validation_failed", []string{"0 from invalid_utf8"}, ""}},
		{"invalid UTF-8 in a broadcast number", "{\"to\":[\"+4915112345678\",\"+49\xff\"],\"body\":\"hi\"}",
			want{422, "validation_failed", []string{"1 to invalid_utf8"}, ""}},
		{"NUL in a metadata value", `{"messages":[{` + ok + `}],"metadata":{"a":{"b":["x","\u0000"]}}}`,
			want{422, "validation_failed", []string{"-1 metadata invalid_character"}, ""}},
		{"NUL in a metadata key", `{"messages":[{` + ok + `}],"metadata":{"a\u0000":1}}`,
			want{422, "validation_failed", []string{"-1 metadata invalid_character"}, ""}},
		{"lone surrogate in metadata", `{"messages":[{` + ok + `}],"metadata":{"a":"\ud83d"}}`,
			want{422, "validation_failed", []string{"-1 metadata invalid_utf8"}, ""}},
		{"invalid UTF-8 in a metadata key", "{\"messages\":[{" + ok + "}],\"metadata\":{\"k\xff\":1}}",
			want{422, "validation_failed", []string{"-1 metadata invalid_utf8"}, ""}},
		{"validity_seconds as a string", `{"messages":[{` + ok + `}],"validity_seconds":"60"}`,
			want{400, "invalid_request", nil, "validity_seconds"}},
		{"validity_seconds as a fraction", `{"messages":[{` + ok + `}],"validity_seconds":60.5}`,
			want{400, "invalid_request", nil, "validity_seconds"}},
		{"repeated order key", `{"messages":[{` + ok + `}],"validity_seconds":60,"validity_seconds":70}`,
			want{400, "invalid_request", nil, "validity_seconds: the key appears more than once"}},
		{"repeated message key", `{"messages":[{` + ok + `,"body":"other"}]}`,
			want{400, "invalid_request", nil, "messages[0].body: the key appears more than once"}},
		{"repeated metadata key", `{"messages":[{` + ok + `}],"metadata":{"a":{"b":1,"b":2}}}`,
			want{400, "invalid_request", nil, "metadata.a.b: the key appears more than once"}},
		{"wrong type in a message", `{"messages":[{"to":4915112345678,"body":"x"}]}`,
			want{400, "invalid_request", nil, "messages[0].to: expected a string, got JSON a number"}},
		{"unknown message field", `{"messages":[{` + ok + `,"sender":"y"}]}`,
			want{400, "invalid_request", nil, "messages[0].sender: unknown field"}},
		{"a message that is not an object", `{"messages":[5]}`,
			want{400, "invalid_request", nil, "messages[0]: expected an object"}},
		{"broadcast to that is not an array", `{"to":"+4915112345678","body":"x"}`,
			want{400, "invalid_request", nil, "to: expected an array of strings"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := accept.NewPlanner(accept.DefaultPolicy(), &domain.Account{ID: "a", Currency: "EUR", Balance: 1 << 40})
			err := decodeOrder(strings.NewReader(tc.body), p, time.Now())
			if err == nil {
				_, err = p.Finish()
			}
			require.Error(t, err, "accepted")
			prob, _ := problemFor(err, "", "")
			require.Equal(t, tc.want.status, prob.Status, "%v", err)
			require.Equal(t, tc.want.code, prob.Code)
			require.Contains(t, prob.Detail, tc.want.detail)
			var got []string
			for _, fe := range prob.Errors {
				i := -1
				if fe.Index != nil {
					i = *fe.Index
				}
				got = append(got, strings.Join([]string{itoa(i), fe.Field, fe.Code}, " "))
				require.NotEmpty(t, fe.Detail)
			}
			require.Equal(t, tc.want.errors, got)
		})
	}
}

// TestDecodeKeepsValidText: what must still pass, byte for byte.
func TestDecodeKeepsValidText(t *testing.T) {
	p := accept.NewPlanner(accept.DefaultPolicy(), &domain.Account{ID: "a", Currency: "EUR", Balance: 1 << 40})
	body := `{"messages":[{"to":"+4915112345678","body":"caf\u00e9 \ud83d\ude00 ü","from":"Acme"}],` +
		`"validity_seconds":60,"metadata":{"k":"\u00e9","n":[1,{"x":null}]}}`
	require.NoError(t, decodeOrder(strings.NewReader(body), p, time.Now()))
	plan, err := p.Finish()
	require.NoError(t, err)
	require.Equal(t, "café 😀 ü", plan.Messages[0].Body)
	require.Equal(t, 60, plan.ValiditySeconds)
	require.JSONEq(t, `{"k":"é","n":[1,{"x":null}]}`, string(plan.ClientMetadata))
}

func itoa(i int) string {
	if i < 0 {
		return "-1"
	}
	return string(rune('0' + i))
}

// TestDecodeSendAt: a send_at is an RFC 3339 string (else 400 naming it),
// from a minute behind now to 35 days ahead (else 422 naming it), and the
// plan carries it.
func TestDecodeSendAt(t *testing.T) {
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	const msgs = `"messages":[{"to":"+4915112345678","body":"hi"}]`
	for _, tc := range []struct {
		sendAt string
		status int
		want   time.Time
	}{
		{`"2026-03-01T10:00:00Z"`, 0, now.Add(time.Hour)},
		{`"2026-03-01T11:00:00.5+01:00"`, 0, now.Add(time.Hour + 500*time.Millisecond)},
		{`"2026-03-01T08:59:30Z"`, 0, now.Add(-30 * time.Second)}, // within the tolerance
		{`"2026-04-05T09:00:00Z"`, 0, now.Add(35 * 24 * time.Hour)},
		{`null`, 0, time.Time{}},
		{`"2026-03-01T08:58:00Z"`, 422, time.Time{}},
		{`"2026-04-05T09:00:01Z"`, 422, time.Time{}},
		{`"tomorrow"`, 400, time.Time{}},
		{`"2026-03-01 10:00:00"`, 400, time.Time{}},
		{`1772355600`, 400, time.Time{}},
	} {
		t.Run(tc.sendAt, func(t *testing.T) {
			p := accept.NewPlanner(accept.DefaultPolicy(), &domain.Account{ID: "a", Currency: "EUR", Balance: 1 << 40})
			err := decodeOrder(strings.NewReader(`{`+msgs+`,"send_at":`+tc.sendAt+`}`), p, now)
			var plan *accept.Plan
			if err == nil {
				plan, err = p.Finish()
			}
			if tc.status == 0 {
				require.NoError(t, err)
				require.True(t, tc.want.Equal(plan.SendAt), "send_at %v, want %v", plan.SendAt, tc.want)
				return
			}
			require.Error(t, err)
			prob, _ := problemFor(err, "", "")
			require.Equal(t, tc.status, prob.Status, "%v", err)
			if tc.status == 422 {
				require.Len(t, prob.Errors, 1)
				require.Equal(t, "send_at", prob.Errors[0].Field)
				require.Equal(t, accept.CodeOutOfRange, prob.Errors[0].Code)
			} else {
				require.Contains(t, prob.Detail, "send_at")
			}
		})
	}
}
