package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

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

// ReceiptError says what is wrong with a receipts body. Index is the
// receipt's position in the body, or -1 when the body as a whole is wrong.
type ReceiptError struct {
	Index   int
	Field   string
	Problem string
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

// wireReceipt uses pointers and raw values so that a missing field can be
// told from a zero one.
type wireReceipt struct {
	ID        *string `json:"id"`
	Reference *string `json:"reference"`
	Attempt   *int    `json:"attempt"`
	Status    *string `json:"status"`
	ErrorCode string  `json:"error_code"`
	DoneAt    *string `json:"done_at"`
	Part      *int    `json:"part"`
	Parts     *int    `json:"parts"`
}

// ParseReceipts reads a receipts body posted by provider. It is strict: a
// receipt with a missing field, an unknown status or an impossible part
// number fails the whole body with a *ReceiptError naming it, because an
// intake that skipped it would answer 2xx and the provider would never resend
// it. Unknown extra fields are allowed (providers add fields) and kept in Raw.
func ParseReceipts(provider string, body []byte) ([]Receipt, error) {
	var envelope struct {
		Receipts *[]json.RawMessage `json:"receipts"`
	}
	if err := json.Unmarshal(body, &envelope); err != nil {
		return nil, &ReceiptError{Index: -1, Problem: "not JSON: " + err.Error()}
	}
	if envelope.Receipts == nil {
		return nil, &ReceiptError{Index: -1, Field: "receipts", Problem: "missing"}
	}
	raws := *envelope.Receipts
	out := make([]Receipt, 0, len(raws))
	for i, raw := range raws {
		r, err := parseReceipt(provider, i, raw)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

func parseReceipt(provider string, i int, raw json.RawMessage) (Receipt, error) {
	bad := func(field, problem string) (Receipt, error) {
		return Receipt{}, &ReceiptError{Index: i, Field: field, Problem: problem}
	}
	if !bytes.HasPrefix(bytes.TrimSpace(raw), []byte("{")) {
		return bad("", "not a JSON object")
	}
	var w wireReceipt
	if err := json.Unmarshal(raw, &w); err != nil {
		return bad("", err.Error())
	}
	for _, f := range []struct {
		name  string
		value *string
	}{{"id", w.ID}, {"reference", w.Reference}, {"status", w.Status}, {"done_at", w.DoneAt}} {
		if f.value == nil || *f.value == "" {
			return bad(f.name, "missing")
		}
	}
	switch {
	case w.Attempt == nil:
		return bad("attempt", "missing")
	case *w.Attempt < 1:
		return bad("attempt", fmt.Sprintf("%d is not a valid attempt", *w.Attempt))
	case w.Part == nil:
		return bad("part", "missing")
	case w.Parts == nil:
		return bad("parts", "missing")
	case *w.Parts < 1 || *w.Part < 1 || *w.Part > *w.Parts:
		return bad("part", fmt.Sprintf("part %d of %d", *w.Part, *w.Parts))
	}
	doneAt, err := time.Parse(time.RFC3339Nano, *w.DoneAt)
	if err != nil {
		return bad("done_at", "not RFC 3339: "+err.Error())
	}
	status, code, permanent, known := receiptMeaning(*w.Status)
	if !known {
		return bad("status", fmt.Sprintf("unknown value %q", *w.Status))
	}
	r := Receipt{
		Provider:          provider,
		ProviderMessageID: *w.ID,
		MessageID:         *w.Reference,
		Attempt:           *w.Attempt,
		Status:            status,
		DoneAt:            doneAt,
		Part:              *w.Part,
		Parts:             *w.Parts,
		Raw:               raw,
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
