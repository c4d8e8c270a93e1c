package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain"
)

// ReceiptStatus is a delivery receipt's meaning in afterok's terms.
type ReceiptStatus string

// The normalized receipt statuses.
const (
	// ReceiptDelivered: the handset has the message (or this part of it).
	ReceiptDelivered ReceiptStatus = "delivered"
	// ReceiptFailed: the network gave up; Failure is permanent.
	ReceiptFailed ReceiptStatus = "failed"
	// ReceiptRetry: this attempt failed but another may succeed; Failure is
	// transient.
	ReceiptRetry ReceiptStatus = "retry"
)

// Receipt is one delivery receipt, normalized. For a message of several
// segments a provider may send one receipt per part (Part of Parts); this
// package reports them as they come and leaves it to the intake to decide how
// parts resolve the message.
type Receipt struct {
	Provider          string
	ProviderMessageID string
	MessageID         string
	Attempt           int
	Status            ReceiptStatus
	// Failure is set for ReceiptFailed and ReceiptRetry (Stage delivery).
	Failure *domain.Failure
	DoneAt  time.Time
	Part    int
	Parts   int
	// Raw is the receipt's own JSON object exactly as the provider sent it,
	// kept because receipts are evidence: support and replays must be able
	// to see what the provider said, not only what we made of it.
	Raw json.RawMessage
}

// receiptMeaning is the one table from the sandbox protocol's receipt
// statuses to afterok's:
//
//	provider status    normalized        failure code                 permanent
//	delivered          ReceiptDelivered  -                            -
//	undeliverable      ReceiptFailed     undeliverable                yes
//	expired            ReceiptFailed     undeliverable                yes
//	failed_temporary   ReceiptRetry      delivery_failed_temporarily  no
//
// A network-side "expired" (the operator's validity period ran out while the
// handset was unreachable) is reported as undeliverable, not as
// domain.CodeExpired: that code means our own validity window elapsed before a
// final state (Stage expiry), and mixing the two would make expiry statistics
// lie. The provider's word survives in Failure.ProviderCode and in Raw.
func receiptMeaning(status string) (ReceiptStatus, string, bool, bool) {
	switch status {
	case "delivered":
		return ReceiptDelivered, "", false, true
	case "undeliverable", "expired":
		return ReceiptFailed, domain.CodeUndeliverable, true, true
	case "failed_temporary":
		return ReceiptRetry, domain.CodeDeliveryDelayed, false, true
	}
	return "", "", false, false
}

// ReceiptError says what is wrong with a receipts body, or with one
// receipt of it. Index is the receipt's position in the body, or -1 when
// the body as a whole is wrong.
type ReceiptError struct {
	Index int
	Field string
	// Code is one of the Refused* codes for a refused receipt (a bounded
	// set, fit for a metric label); empty for a body-level error.
	Code    string
	Problem string
	// Raw is the refused receipt exactly as sent (it may be text that is
	// not valid JSON for the store: kept as bytes).
	Raw []byte
}

// Error names the receipt and field at fault.
func (e *ReceiptError) Error() string {
	where := "receipts body"
	if e.Index >= 0 {
		where = fmt.Sprintf("receipt %d", e.Index)
	}
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", where, e.Field, e.Problem)
	}
	return where + ": " + e.Problem
}

// wireReceipt uses pointers so that a missing field can be told from a
// zero one.
type wireReceipt struct {
	ID        *string `json:"id"`
	Reference *string `json:"reference"`
	Attempt   *int64  `json:"attempt"`
	Status    *string `json:"status"`
	ErrorCode string  `json:"error_code"`
	DoneAt    *string `json:"done_at"`
	Part      *int64  `json:"part"`
	Parts     *int64  `json:"parts"`
}

// ParseReceipts reads a receipts body posted by provider and fails on the
// first receipt that ParseReceiptBatch would refuse: for a strict reader
// (tests, tools) that wants all or nothing.
func ParseReceipts(provider string, body []byte) ([]Receipt, error) {
	ok, refused, err := ParseReceiptBatch(provider, body)
	if err != nil {
		return nil, err
	}
	if len(refused) > 0 {
		return nil, refused[0]
	}
	return ok, nil
}

// ParseReceiptBatch reads a receipts body posted by provider, receipt by
// receipt. A body that is not a JSON object with a "receipts" array is an
// error (*ReceiptError, Index -1): nothing in it can be trusted. Otherwise
// every receipt is judged on its own: the usable ones are returned in body
// order, each bad one as a *ReceiptError naming its index and field, so
// that one bad receipt never holds back the good ones of the same batch (a
// provider that retries a refused batch would never get them through).
//
// A receipt is refused when a field is missing or of the wrong type, an
// integer is out of range, the status is unknown, done_at is not RFC 3339,
// a text field is too long, or any key or value (extra fields included:
// they are kept in Raw) is not valid Unicode or holds U+0000. Unknown
// extra fields are otherwise allowed (providers add fields).
func ParseReceiptBatch(provider string, body []byte) (ok []Receipt, refused []*ReceiptError, err error) {
	raws, err := receiptItems(body)
	if err != nil {
		return nil, nil, err
	}
	ok = make([]Receipt, 0, len(raws))
	for i, raw := range raws {
		r, err := parseReceipt(provider, i, raw)
		if err != nil {
			err.Raw = raw
			refused = append(refused, err)
			continue
		}
		ok = append(ok, r)
	}
	return ok, refused, nil
}

// receiptItems splits a body into its receipts without judging them. It
// is lenient about text and about keys repeated inside a receipt, so that
// such a receipt is refused alone rather than the whole body with it; a
// repeated key of the envelope itself refuses the body (which list would
// count?).
func receiptItems(body []byte) ([]jsontext.Value, error) {
	bad := func(problem string) ([]jsontext.Value, error) {
		return nil, &ReceiptError{Index: -1, Problem: problem}
	}
	dec := jsontext.NewDecoder(bytes.NewReader(body), jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(true))
	if tok, err := dec.ReadToken(); err != nil || tok.Kind() != '{' {
		return bad("not a JSON object with a receipts array")
	}
	var items []jsontext.Value
	found := false
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return bad("not JSON: " + err.Error())
		}
		if tok.String() != "receipts" {
			if err := dec.SkipValue(); err != nil {
				return bad("not JSON: " + err.Error())
			}
			continue
		}
		if found {
			return nil, &ReceiptError{Index: -1, Field: "receipts", Problem: "given more than once"}
		}
		found = true
		switch tok, err := dec.ReadToken(); {
		case err != nil:
			return bad("not JSON: " + err.Error())
		case tok.Kind() != '[':
			return nil, &ReceiptError{Index: -1, Field: "receipts", Problem: "not an array"}
		}
		for dec.PeekKind() != ']' {
			v, err := dec.ReadValue()
			if err != nil {
				return bad("not JSON: " + err.Error())
			}
			items = append(items, v.Clone()) // v is the decoder's buffer
		}
		if _, err := dec.ReadToken(); err != nil {
			return bad("not JSON: " + err.Error())
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return bad("not JSON: " + err.Error())
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return bad("unexpected data after the JSON object")
	}
	if !found {
		return nil, &ReceiptError{Index: -1, Field: "receipts", Problem: "missing"}
	}
	return items, nil
}

func parseReceipt(provider string, i int, raw jsontext.Value) (Receipt, *ReceiptError) {
	bad := func(field, code, problem string) (Receipt, *ReceiptError) {
		return Receipt{}, &ReceiptError{Index: i, Field: field, Code: code, Problem: problem}
	}
	if raw.Kind() != '{' {
		return bad("", RefusedNotObject, "not a JSON object")
	}
	if len(raw) > MaxReceiptBytes {
		return bad("", RefusedTooLong, fmt.Sprintf("%d bytes; at most %d", len(raw), MaxReceiptBytes))
	}
	if field, problem := checkText(raw); problem != "" {
		return bad(field, RefusedInvalidText, problem)
	}
	var w wireReceipt
	if err := jsonv2.Unmarshal(raw, &w); err != nil {
		field := ""
		var se *jsonv2.SemanticError
		if errors.As(err, &se) {
			field = strings.TrimPrefix(string(se.JSONPointer), "/")
		}
		code, problem := wrongType(err)
		return bad(field, code, problem)
	}
	for _, f := range []struct {
		name  string
		value *string
		max   int
	}{{"id", w.ID, maxIDBytes}, {"reference", w.Reference, maxIDBytes}, {"status", w.Status, maxIDBytes}, {"done_at", w.DoneAt, maxIDBytes}} {
		switch {
		case f.value == nil || *f.value == "":
			return bad(f.name, RefusedMissing, "missing")
		case len(*f.value) > f.max:
			return bad(f.name, RefusedTooLong, fmt.Sprintf("%d bytes; at most %d", len(*f.value), f.max))
		}
	}
	if len(w.ErrorCode) > maxIDBytes {
		return bad("error_code", RefusedTooLong, fmt.Sprintf("%d bytes; at most %d", len(w.ErrorCode), maxIDBytes))
	}
	switch {
	case w.Attempt == nil:
		return bad("attempt", RefusedMissing, "missing")
	case *w.Attempt < 1 || *w.Attempt > MaxReceiptAttempt:
		return bad("attempt", RefusedOutOfRange, fmt.Sprintf("%d is not an attempt (1 to %d)", *w.Attempt, MaxReceiptAttempt))
	case w.Part == nil:
		return bad("part", RefusedMissing, "missing")
	case w.Parts == nil:
		return bad("parts", RefusedMissing, "missing")
	case *w.Parts < 1 || *w.Parts > MaxReceiptParts:
		return bad("parts", RefusedOutOfRange, fmt.Sprintf("%d parts; a message has 1 to %d", *w.Parts, MaxReceiptParts))
	case *w.Part < 1 || *w.Part > *w.Parts:
		return bad("part", RefusedOutOfRange, fmt.Sprintf("part %d of %d", *w.Part, *w.Parts))
	}
	doneAt, err := time.Parse(time.RFC3339Nano, *w.DoneAt)
	if err != nil {
		return bad("done_at", RefusedInvalidTime, "not RFC 3339: "+err.Error())
	}
	status, code, permanent, known := receiptMeaning(*w.Status)
	if !known {
		return bad("status", RefusedUnknownStatus, fmt.Sprintf("unknown value %q", *w.Status))
	}
	r := Receipt{
		Provider:          provider,
		ProviderMessageID: *w.ID,
		MessageID:         *w.Reference,
		Attempt:           int(*w.Attempt),
		Status:            status,
		DoneAt:            doneAt,
		Part:              int(*w.Part),
		Parts:             int(*w.Parts),
		Raw:               json.RawMessage(raw),
	}
	if status != ReceiptDelivered {
		providerCode := *w.Status
		reason := "provider reported " + *w.Status
		if w.ErrorCode != "" {
			providerCode = w.ErrorCode
			reason += " (" + w.ErrorCode + ")"
		}
		r.Failure = &domain.Failure{
			Code:         code,
			Reason:       reason,
			Stage:        domain.StageDelivery,
			Permanent:    permanent,
			Provider:     provider,
			ProviderCode: providerCode,
		}
	}
	return r, nil
}
