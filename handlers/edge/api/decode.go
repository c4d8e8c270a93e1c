package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain/accept"
)

// How an order body is read, and why in two layers.
//
// The outer decoder streams the body token by token, so a 100,000-message
// order is never held as both bytes and values. It checks the JSON syntax
// and refuses a repeated key anywhere (RFC 8259 leaves its meaning open:
// one reader takes the first, another the last), but lets text that is not
// valid Unicode (invalid UTF-8, an unpaired surrogate escape such as
// "\ud800") through. Each value is then decoded strictly on its own: a
// message's to, body or from that is not valid Unicode becomes that
// message's validation problem (invalid_utf8, with its index) and decoding
// goes on, so the 422 lists every bad message like any other rule. The
// lenient-then-strict split is what lets decoding continue: a strict outer
// decoder would stop at the first bad byte. Nothing is ever silently
// replaced with U+FFFD, which is what encoding/json does.
var (
	outerOptions = json.JoinOptions(jsontext.AllowInvalidUTF8(true), jsontext.AllowDuplicateNames(false))
	// strictValue is how one value is decoded: exact member names, no
	// unknown members, valid Unicode, numbers only from JSON numbers.
	strictValue = json.RejectUnknownMembers(true)
	// looseText reads raw member values without judging their text, to
	// find out which of a message's fields is not valid Unicode.
	looseText = json.JoinOptions(json.RejectUnknownMembers(true), jsontext.AllowInvalidUTF8(true))
)

// wireMessage is one message of "messages" as sent.
type wireMessage struct {
	To   string `json:"to"`
	Body string `json:"body"`
	From string `json:"from"`
}

// decodeOrder streams an order request into the planner: each message is
// decoded and checked as it is read. Shape errors (malformed JSON, wrong
// types, unknown or repeated fields) end decoding with invalid_request;
// rule violations, including text that is not valid Unicode, are collected
// by the planner and reported together.
//
// now is the clock a send_at is judged against.
func decodeOrder(r io.Reader, p *accept.Planner, now time.Time) error {
	dec := jsontext.NewDecoder(r, outerOptions)
	if err := expectDelim(dec, '{', "the body must be a JSON object"); err != nil {
		return err
	}
	var (
		hasMessages, hasTo bool
		broadcast          []string
		broadcastBad       []bool
		body, from         *string
		bodyBad, fromBad   bool
		count              int
	)
	for dec.PeekKind() != '}' {
		tok, err := dec.ReadToken()
		if err != nil {
			return syntaxError(err)
		}
		key := tok.String()
		switch key {
		case "messages":
			hasMessages = true
			if err := expectDelim(dec, '[', "messages must be an array"); err != nil {
				return err
			}
			for dec.PeekKind() != ']' {
				raw, err := dec.ReadValue()
				if err != nil {
					return syntaxError(err)
				}
				in, err := decodeMessage(raw)
				if err != nil {
					return valueError(fmt.Sprintf("messages[%d]", count), err)
				}
				if err := p.Add(count, in); err != nil {
					return err
				}
				count++
			}
			if _, err := dec.ReadToken(); err != nil {
				return syntaxError(err)
			}
		case "to":
			hasTo = true
			raw, err := dec.ReadValue()
			if err != nil {
				return syntaxError(err)
			}
			if broadcast, broadcastBad, err = decodeTexts(raw); err != nil {
				return valueError("to", err)
			}
		case "body", "from":
			raw, err := dec.ReadValue()
			if err != nil {
				return syntaxError(err)
			}
			s, bad, err := decodeText(raw)
			if err != nil {
				return valueError(key, err)
			}
			if key == "body" {
				body, bodyBad = &s, bad
			} else {
				from, fromBad = &s, bad
			}
		case "validity_seconds":
			raw, err := dec.ReadValue()
			if err != nil {
				return syntaxError(err)
			}
			var v int64
			if raw.Kind() != '0' || json.Unmarshal(raw, &v, strictValue) != nil {
				return fail(errInvalidRequest, "validity_seconds must be a whole number of seconds (a JSON number, not %s)", describe(raw))
			}
			p.SetValidity(v)
		case "send_at":
			raw, err := dec.ReadValue()
			if err != nil {
				return syntaxError(err)
			}
			if raw.Kind() == 'n' {
				break
			}
			var v string
			if raw.Kind() != '"' || json.Unmarshal(raw, &v, strictValue) != nil {
				return fail(errInvalidRequest, "send_at must be an RFC 3339 time such as 2026-03-01T09:00:00Z (a JSON string, not %s)", describe(raw))
			}
			at, err := time.Parse(time.RFC3339Nano, v)
			if err != nil {
				return fail(errInvalidRequest, "send_at %q is not an RFC 3339 time such as 2026-03-01T09:00:00Z", v)
			}
			p.SetSendAt(at, now)
		case "metadata":
			raw, err := dec.ReadValue()
			if err != nil {
				return syntaxError(err)
			}
			if raw.Kind() != 'n' {
				// raw is the decoder's buffer, reused on the next read.
				p.SetMetadata(bytes.Clone(raw))
			}
		default:
			return fail(errInvalidRequest, "unknown field %q (an order has messages, or to + body, and optionally from, validity_seconds, send_at, metadata)", key)
		}
	}
	if _, err := dec.ReadToken(); err != nil {
		return syntaxError(err)
	}
	if _, err := dec.ReadToken(); err != io.EOF {
		return fail(errInvalidRequest, "unexpected data after the JSON object")
	}
	switch {
	case hasMessages && (hasTo || body != nil):
		p.Conflict("messages", "send either messages, or to with body (a broadcast), not both")
	case hasTo:
		if body == nil {
			p.Missing("body", "a broadcast needs a body")
		}
		in := accept.Input{}
		if body != nil {
			in.Body = *body
		}
		if from != nil {
			in.From = *from
		}
		var shared []string
		if bodyBad {
			shared = append(shared, "body")
		}
		if fromBad {
			shared = append(shared, "from")
		}
		p.Grow(len(broadcast))
		for i, to := range broadcast {
			in.To, in.NotUnicode = to, shared
			if broadcastBad != nil && broadcastBad[i] {
				in.NotUnicode = append(shared[:len(shared):len(shared)], "to")
			}
			if err := p.Add(i, in); err != nil {
				return err
			}
		}
	case body != nil || from != nil:
		p.Missing("to", "a broadcast needs to: a list of E.164 numbers")
	}
	return nil
}

// decodeMessage decodes one message strictly. Only when that fails on its
// text does it look at each field to name the ones that are not valid
// Unicode: the common case costs one decode.
func decodeMessage(raw jsontext.Value) (accept.Input, error) {
	var m wireMessage
	err := json.Unmarshal(raw, &m, strictValue)
	if err == nil {
		return accept.Input{To: m.To, Body: m.Body, From: m.From}, nil
	}
	if !isTextError(err) {
		return accept.Input{}, err
	}
	var fields struct {
		To   jsontext.Value `json:"to"`
		Body jsontext.Value `json:"body"`
		From jsontext.Value `json:"from"`
	}
	if err := json.Unmarshal(raw, &fields, looseText); err != nil {
		return accept.Input{}, err
	}
	var in accept.Input
	for _, f := range []struct {
		name string
		raw  jsontext.Value
		dst  *string
	}{{"to", fields.To, &in.To}, {"body", fields.Body, &in.Body}, {"from", fields.From, &in.From}} {
		if len(f.raw) == 0 {
			continue
		}
		s, bad, err := decodeText(f.raw)
		if err != nil {
			return accept.Input{}, &json.SemanticError{JSONPointer: jsontext.Pointer("/" + f.name), Err: err}
		}
		*f.dst = s
		if bad {
			in.NotUnicode = append(in.NotUnicode, f.name)
		}
	}
	return in, nil
}

// decodeText decodes a JSON string (or null, as ""), reporting bad when
// its text is not valid Unicode.
func decodeText(raw jsontext.Value) (s string, bad bool, err error) {
	err = json.Unmarshal(raw, &s, strictValue)
	if isTextError(err) {
		return "", true, nil
	}
	return s, false, err
}

// decodeTexts decodes a JSON array of strings, marking the elements whose
// text is not valid Unicode (bad is nil when none is).
func decodeTexts(raw jsontext.Value) (out []string, bad []bool, err error) {
	err = json.Unmarshal(raw, &out, strictValue)
	if !isTextError(err) {
		return out, nil, err
	}
	var raws []jsontext.Value
	if err := json.Unmarshal(raw, &raws, looseText); err != nil {
		return nil, nil, err
	}
	out, bad = make([]string, len(raws)), make([]bool, len(raws))
	for i, r := range raws {
		s, b, err := decodeText(r)
		if err != nil {
			return nil, nil, &json.SemanticError{JSONPointer: jsontext.Pointer("/" + strconv.Itoa(i)), Err: err}
		}
		out[i], bad[i] = s, b
	}
	return out, bad, nil
}

// isTextError reports a strict decode's refusal of text that the lenient
// outer decoder let through: invalid UTF-8 or an unpaired surrogate. Any
// other syntax error was already refused by the outer decoder.
func isTextError(err error) bool {
	var se *jsontext.SyntacticError
	return errors.As(err, &se)
}

func expectDelim(dec *jsontext.Decoder, want jsontext.Kind, msg string) error {
	t, err := dec.ReadToken()
	if err != nil {
		return syntaxError(err)
	}
	if t.Kind() != want {
		return fail(errInvalidRequest, "%s", msg)
	}
	return nil
}

// syntaxError explains a JSON failure, or passes a body-size failure, or
// the body guard's (bodies.go), on.
func syntaxError(err error) error {
	var mb *http.MaxBytesError
	var guard *detailed
	switch {
	case errors.As(err, &guard):
		return err
	case errors.As(err, &mb):
		return fail(errTooLarge, "the body exceeds %d bytes", mb.Limit)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fail(errInvalidRequest, "the body ended early: incomplete JSON")
	}
	var se *jsontext.SyntacticError
	if errors.As(err, &se) {
		where := fieldPath("", se.JSONPointer)
		if errors.Is(se.Err, jsontext.ErrDuplicateName) {
			return fail(errInvalidRequest, "%s: the key appears more than once in its object (each key may be given once)", where)
		}
		return fail(errInvalidRequest, "malformed JSON at byte %d (%s): %v", se.ByteOffset, where, se.Err)
	}
	return fail(errInvalidRequest, "malformed JSON: %v", err)
}

// valueError explains a value that does not fit its field.
func valueError(field string, err error) error {
	var se *json.SemanticError
	if errors.As(err, &se) {
		where := fieldPath(field, se.JSONPointer)
		if errors.Is(se.Err, json.ErrUnknownName) {
			return fail(errInvalidRequest, "%s: unknown field (a message has to, body and optionally from)", where)
		}
		want := "a string"
		switch {
		case se.JSONPointer != "":
		case field == "to":
			want = "an array of strings"
		case strings.HasPrefix(field, "messages["):
			want = "an object"
		}
		if se.JSONKind != 0 {
			return fail(errInvalidRequest, "%s: expected %s, got JSON %s", where, want, kindName(se.JSONKind))
		}
		return fail(errInvalidRequest, "%s: expected %s", where, want)
	}
	return syntaxError(err)
}

// fieldPath turns a JSON pointer under field into the notation of the
// problem details: messages[3].body.
func fieldPath(field string, ptr jsontext.Pointer) string {
	var b strings.Builder
	b.WriteString(field)
	for tok := range ptr.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		if b.Len() > 0 {
			b.WriteByte('.')
		}
		b.WriteString(tok)
	}
	if b.Len() == 0 {
		return "the body"
	}
	return b.String()
}

func describe(v jsontext.Value) string {
	if v.Kind() == '0' {
		return "a fraction or a number out of range"
	}
	return kindName(v.Kind())
}

func kindName(k jsontext.Kind) string {
	switch k {
	case '"':
		return "a string"
	case '0':
		return "a number"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "an unexpected value"
}
