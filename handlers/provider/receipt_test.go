package provider

import (
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain"
)

func TestParseReceiptsMapping(t *testing.T) {
	body := `{"receipts":[
 {"id":"p1","reference":"m1","attempt":1,"status":"delivered","done_at":"2025-01-02T03:04:05.123456789Z","part":1,"parts":1},
 {"id":"p2","reference":"m2","attempt":2,"status":"undeliverable","error_code":"unknown_subscriber","done_at":"2025-01-02T03:04:05Z","part":1,"parts":2},
 {"id":"p3","reference":"m3","attempt":1,"status":"expired","done_at":"2025-01-02T03:04:05Z","part":2,"parts":2, "carrier":"x"},
 {"id":"p4","reference":"m4","attempt":3,"status":"failed_temporary","error_code":"congestion","done_at":"2025-01-02T03:04:05+01:00","part":1,"parts":1}
]}`
	got, err := ParseReceipts("sim-a", []byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 4 {
		t.Fatalf("got %d receipts, want 4", len(got))
	}
	d := got[0]
	if d.Provider != "sim-a" || d.ProviderMessageID != "p1" || d.MessageID != "m1" || d.Attempt != 1 ||
		d.Status != ReceiptDelivered || d.Failure != nil || d.Part != 1 || d.Parts != 1 ||
		!d.DoneAt.Equal(time.Date(2025, 1, 2, 3, 4, 5, 123456789, time.UTC)) {
		t.Errorf("delivered receipt: %+v", d)
	}
	wantFailures := []struct {
		status ReceiptStatus
		f      domain.Failure
	}{
		{ReceiptFailed, domain.Failure{Code: domain.CodeUndeliverable, Reason: "provider reported undeliverable (unknown_subscriber)", Stage: domain.StageDelivery, Permanent: true, Provider: "sim-a", ProviderCode: "unknown_subscriber"}},
		{ReceiptFailed, domain.Failure{Code: domain.CodeUndeliverable, Reason: "provider reported expired", Stage: domain.StageDelivery, Permanent: true, Provider: "sim-a", ProviderCode: "expired"}},
		{ReceiptRetry, domain.Failure{Code: domain.CodeDeliveryDelayed, Reason: "provider reported failed_temporary (congestion)", Stage: domain.StageDelivery, Permanent: false, Provider: "sim-a", ProviderCode: "congestion"}},
	}
	for i, w := range wantFailures {
		r := got[i+1]
		if r.Status != w.status || r.Failure == nil || *r.Failure != w.f {
			t.Errorf("receipt %d: status %s failure %+v; want %s %+v", i+1, r.Status, r.Failure, w.status, w.f)
		}
	}
	// Raw is the receipt's own object, byte for byte, unknown fields and all.
	if want := `{"id":"p3","reference":"m3","attempt":1,"status":"expired","done_at":"2025-01-02T03:04:05Z","part":2,"parts":2, "carrier":"x"}`; string(got[2].Raw) != want {
		t.Errorf("Raw = %s\nwant  %s", got[2].Raw, want)
	}
}

func TestParseReceiptsErrors(t *testing.T) {
	valid := `{"id":"p1","reference":"m1","attempt":1,"status":"delivered","done_at":"2025-01-02T03:04:05Z","part":1,"parts":1}`
	without := func(field string) string {
		// Drop `"field":value` from the valid receipt.
		start := strings.Index(valid, `"`+field+`":`)
		end := strings.IndexAny(valid[start:], ",}") + start
		out := valid[:start] + valid[end:]
		out = strings.Replace(out, "{,", "{", 1)
		out = strings.Replace(out, ",}", "}", 1)
		return strings.Replace(out, ",,", ",", 1)
	}
	with := func(field, value string) string {
		start := strings.Index(valid, `"`+field+`":`) + len(field) + 3
		end := strings.IndexAny(valid[start:], ",}") + start
		return valid[:start] + value + valid[end:]
	}
	cases := []struct {
		name  string
		body  string
		index int
		field string
	}{
		{"not json", `{"receipts":`, -1, ""},
		{"no receipts member", `{"items":[]}`, -1, "receipts"},
		{"receipts null", `{"receipts":null}`, -1, "receipts"},
		{"not an object", `{"receipts":[` + valid + `,42]}`, 1, ""},
		{"unknown status", `{"receipts":[` + valid + `,` + with("status", `"read"`) + `]}`, 1, "status"},
		{"bad done_at", `{"receipts":[` + with("done_at", `"yesterday"`) + `]}`, 0, "done_at"},
		{"attempt zero", `{"receipts":[` + with("attempt", `0`) + `]}`, 0, "attempt"},
		{"attempt null", `{"receipts":[` + with("attempt", `null`) + `]}`, 0, "attempt"},
		{"empty id", `{"receipts":[` + with("id", `""`) + `]}`, 0, "id"},
		{"part beyond parts", `{"receipts":[` + with("part", `2`) + `]}`, 0, "part"},
		{"wrong type", `{"receipts":[` + with("attempt", `"1"`) + `]}`, 0, "attempt"},
	}
	for _, f := range []string{"id", "reference", "attempt", "status", "done_at", "part", "parts"} {
		cases = append(cases, struct {
			name  string
			body  string
			index int
			field string
		}{"missing " + f, `{"receipts":[` + valid + `,` + valid + `,` + without(f) + `]}`, 2, f})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseReceipts("sim-a", []byte(c.body))
			var re *ReceiptError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a *ReceiptError", err)
			}
			if re.Index != c.index || re.Field != c.field {
				t.Fatalf("got index %d field %q (%v), want index %d field %q", re.Index, re.Field, err, c.index, c.field)
			}
		})
	}
}

func TestParseReceiptsEmpty(t *testing.T) {
	got, err := ParseReceipts("sim-a", []byte(`{"receipts":[]}`))
	if err != nil || len(got) != 0 {
		t.Fatalf("got %v, %v; want no receipts and no error", got, err)
	}
}

// TestParseReceiptBatchRefusesItemByItem: integers out of range, NUL and
// text that is not valid Unicode, anywhere in a receipt, refuse that
// receipt alone; the good receipts around it come through. Each used to
// fail the whole body, or pass and fail the commit (a 500).
func TestParseReceiptBatchRefusesItemByItem(t *testing.T) {
	item := func(ref, field, value string) string {
		fields := map[string]string{"id": `"p-` + ref + `"`, "reference": `"` + ref + `"`, "attempt": `1`,
			"status": `"delivered"`, "done_at": `"2025-01-02T03:04:05Z"`, "part": `1`, "parts": `1`}
		extra := ""
		if _, known := fields[field]; known {
			fields[field] = value
		} else if field != "" {
			extra = `,` + field + `:` + value
		}
		out := "{"
		for _, k := range []string{"id", "reference", "attempt", "status", "done_at", "part", "parts"} {
			out += `"` + k + `":` + fields[k] + ","
		}
		return strings.TrimSuffix(out, ",") + extra + "}"
	}
	cases := []struct {
		item  string
		field string
		code  string
	}{
		{item("b1", "attempt", `2147483648`), "attempt", RefusedOutOfRange},
		{item("b2", "attempt", `4611686018427387904`), "attempt", RefusedOutOfRange},
		{item("b3", "attempt", `18446744073709551616`), "attempt", RefusedOutOfRange},
		{item("b4", "parts", `4611686018427387904`), "parts", RefusedOutOfRange},
		{item("b5", "part", `-2147483649`), "part", RefusedOutOfRange},
		{item("b6", "id", `"p\u0000"`), "id", RefusedInvalidText},
		{item("b7", `"carrier\u0000"`, `1`), "carrier\\u0000", RefusedInvalidText},
		{item("b8", `"carrier"`, `{"x":["\u0000"]}`), "carrier.x.0", RefusedInvalidText},
		{item("b9", "reference", "\"m\xff\""), "reference", RefusedInvalidText},
		{item("b10", `"error_code"`, `"\ud800"`), "error_code", RefusedInvalidText},
		{item("b11", `"status"`, `"undeliverable"`), "status", RefusedInvalidText}, // a repeated key
		{item("b12", "attempt", `1.5`), "attempt", RefusedOutOfRange},
		{item("b13", "attempt", `"1"`), "attempt", RefusedWrongType},
		{item("b14", "reference", `"`+strings.Repeat("m", 300)+`"`), "reference", RefusedTooLong},
		{`"not an object"`, "", RefusedNotObject},
	}
	body := `{"receipts":[` + item("good1", "", "")
	for _, c := range cases {
		body += "," + c.item
	}
	body += "," + item("good2", "", "") + "]}"
	ok, refused, err := ParseReceiptBatch("sim-a", []byte(body))
	if err != nil {
		t.Fatalf("the body as a whole was refused: %v", err)
	}
	if len(ok) != 2 || ok[0].MessageID != "good1" || ok[1].MessageID != "good2" {
		t.Fatalf("usable receipts: %+v", ok)
	}
	if len(refused) != len(cases) {
		t.Fatalf("refused %d receipts, want %d: %v", len(refused), len(cases), refused)
	}
	for i, c := range cases {
		r := refused[i]
		if r.Index != i+1 || r.Field != c.field || r.Code != c.code || r.Problem == "" {
			t.Errorf("case %d: index %d field %q code %q (%v); want index %d field %q code %q", i, r.Index, r.Field, r.Code, r, i+1, c.field, c.code)
		}
		if string(r.Raw) != c.item {
			t.Errorf("case %d: raw %q, want the receipt as sent %q", i, r.Raw, c.item)
		}
	}
}

// FuzzParseReceiptBatch: whatever a provider posts, the parser neither
// panics nor lets through a receipt the store cannot hold (a 500 that
// would fail the whole batch at commit).
func FuzzParseReceiptBatch(f *testing.F) {
	for _, seed := range []string{
		`{"receipts":[{"id":"p1","reference":"m1","attempt":1,"status":"delivered","done_at":"2025-01-02T03:04:05Z","part":1,"parts":1}]}`,
		`{"receipts":[{"id":"p\u0000","reference":"m1","attempt":2147483648,"status":"delivered","done_at":"2025-01-02T03:04:05Z","part":1,"parts":1,"x":"\ud800"}]}`,
		`{"receipts":[1,{"attempt":1e3}],"receipts":[]}`, `{"receipts":[{"id":"a","id":"b"}]}`, `[]`, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ok, refused, err := ParseReceiptBatch("sim-a", body)
		if err != nil {
			var re *ReceiptError
			if !errors.As(err, &re) || re.Index != -1 {
				t.Fatalf("body-level error of the wrong kind: %v", err)
			}
			return
		}
		for _, r := range ok {
			if r.Attempt < 1 || r.Attempt > MaxReceiptAttempt || r.Parts < 1 || r.Parts > MaxReceiptParts || r.Part < 1 || r.Part > r.Parts {
				t.Fatalf("out of range: %+v", r)
			}
			if !jsontext.Value(r.Raw).IsValid() || strings.Contains(string(r.Raw), `\u0000`) {
				t.Fatalf("raw the store cannot hold: %q", r.Raw)
			}
			for _, s := range []string{r.ProviderMessageID, r.MessageID} {
				if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
					t.Fatalf("text the store cannot hold: %q", s)
				}
			}
		}
		for _, r := range refused {
			if r.Index < 0 || r.Code == "" || r.Problem == "" {
				t.Fatalf("refusal without index, code or problem: %+v", r)
			}
		}
	})
}
