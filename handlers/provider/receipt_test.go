package provider

import (
	"errors"
	"strings"
	"testing"
	"time"

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
		{"wrong type", `{"receipts":[` + with("attempt", `"1"`) + `]}`, 0, ""},
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
