package provider

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// The codes of a refused receipt (ReceiptError.Code): a fixed set, so
// they can label a metric.
const (
	RefusedNotObject     = "not_an_object"
	RefusedMissing       = "missing"
	RefusedWrongType     = "wrong_type"
	RefusedOutOfRange    = "out_of_range"
	RefusedInvalidText   = "invalid_text"
	RefusedTooLong       = "too_long"
	RefusedUnknownStatus = "unknown_status"
	RefusedInvalidTime   = "invalid_time"
)

// The bounds of a receipt. The attempt is stored as a PostgreSQL integer;
// a concatenated SMS counts its parts in one byte of its header.
const (
	MaxReceiptAttempt = math.MaxInt32
	MaxReceiptParts   = 255
	// MaxReceiptBytes bounds one receipt object (kept as raw evidence).
	MaxReceiptBytes = 16 << 10
	maxIDBytes      = 255
)

// checkText finds the first key or value of a receipt, at any depth, that
// is not valid Unicode (invalid UTF-8, an unpaired surrogate escape), holds
// U+0000, or repeats a key: text the store's jsonb and text columns refuse
// (a refusal at commit would fail the whole batch), or that two readers
// could read differently. It returns the field and the problem, or "".
func checkText(raw []byte) (field, problem string) {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.ReadToken()
		if err != nil {
			var se *jsontext.SyntacticError
			switch {
			case errors.Is(err, io.EOF):
				return "", ""
			case errors.As(err, &se) && errors.Is(se.Err, jsontext.ErrDuplicateName):
				return fieldOf(se.JSONPointer), "the key appears more than once"
			case errors.As(err, &se):
				return fieldOf(se.JSONPointer), "not valid Unicode text (invalid UTF-8 or an unpaired surrogate escape)"
			}
			return "", "not valid JSON: " + err.Error()
		}
		if tok.Kind() == '"' && strings.IndexByte(tok.String(), 0) >= 0 {
			return fieldOf(dec.StackPointer()), "contains U+0000 (NUL)"
		}
	}
}

// fieldOf names the field a JSON pointer is in, safe to store and log:
// a key may itself be the bad text.
func fieldOf(ptr jsontext.Pointer) string {
	var b strings.Builder
	for tok := range ptr.Tokens() {
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	s = strings.Map(func(r rune) rune {
		if r < ' ' {
			return -1 // control characters, NUL above all, are dropped here
		}
		return r
	}, strings.ReplaceAll(s, "\x00", `\u0000`))
	return strings.ToValidUTF8(s, "\uFFFD")
}

// wrongType explains a decode failure of a valid, checked receipt: a
// number that does not fit (out_of_range) or a value of the wrong type.
func wrongType(err error) (code, problem string) {
	var se *jsonv2.SemanticError
	if errors.As(err, &se) {
		switch {
		case se.JSONKind == '0':
			return RefusedOutOfRange, fmt.Sprintf("%s is not an integer in range", se.JSONValue)
		case se.JSONKind != 0:
			return RefusedWrongType, "wrong type: JSON " + se.JSONKind.String()
		}
	}
	return RefusedWrongType, "wrong type"
}
