package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/afterok/afterok/domain/accept"
)

// decodeOrder streams an order request into the planner: each message is
// decoded and checked as it is read, so a 100,000-message body is never
// held as both bytes and values. Shape errors (malformed JSON, wrong
// types, unknown fields) end decoding with invalid_request; rule
// violations are collected by the planner and reported together.
func decodeOrder(r io.Reader, p *accept.Planner) error {
	dec := json.NewDecoder(r)
	dec.DisallowUnknownFields()
	if err := expectDelim(dec, '{', "the body must be a JSON object"); err != nil {
		return err
	}
	var (
		hasMessages, hasTo bool
		broadcast          []string
		body, from         *string
		count              int
	)
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return syntaxError(err)
		}
		switch key {
		case "messages":
			hasMessages = true
			if err := expectDelim(dec, '[', "messages must be an array"); err != nil {
				return err
			}
			for dec.More() {
				var m struct {
					To   string `json:"to"`
					Body string `json:"body"`
					From string `json:"from"`
				}
				if err := dec.Decode(&m); err != nil {
					return fieldError(fmt.Sprintf("messages[%d]", count), err)
				}
				if err := p.Add(count, accept.Input{To: m.To, Body: m.Body, From: m.From}); err != nil {
					return err
				}
				count++
			}
			if _, err := dec.Token(); err != nil {
				return syntaxError(err)
			}
		case "to":
			hasTo = true
			if err := dec.Decode(&broadcast); err != nil {
				return fieldError("to", err)
			}
		case "body", "from":
			var s string
			if err := dec.Decode(&s); err != nil {
				return fieldError(key.(string), err)
			}
			if key == "body" {
				body = &s
			} else {
				from = &s
			}
		case "validity_seconds":
			var n json.Number
			if err := dec.Decode(&n); err != nil {
				return fieldError("validity_seconds", err)
			}
			v, err := n.Int64()
			if err != nil {
				return fail(errInvalidRequest, "validity_seconds must be a whole number of seconds")
			}
			p.SetValidity(v)
		case "metadata":
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return fieldError("metadata", err)
			}
			if !bytes.Equal(raw, []byte("null")) {
				p.SetMetadata(raw)
			}
		default:
			return fail(errInvalidRequest, "unknown field %q (an order has messages, or to + body, and optionally from, validity_seconds, metadata)", key)
		}
	}
	if err := expectDelim(dec, '}', "the body must be one JSON object"); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return fail(errInvalidRequest, "unexpected data after the JSON object")
	}
	switch {
	case hasMessages && (hasTo || body != nil):
		p.Conflict("messages", "send either messages, or to with body (a broadcast), not both")
	case hasTo:
		if body == nil {
			p.Missing("body", "a broadcast needs a body")
		}
		b, f := "", ""
		if body != nil {
			b = *body
		}
		if from != nil {
			f = *from
		}
		p.Grow(len(broadcast))
		for i, to := range broadcast {
			if err := p.Add(i, accept.Input{To: to, Body: b, From: f}); err != nil {
				return err
			}
		}
	case body != nil || from != nil:
		p.Missing("to", "a broadcast needs to: a list of E.164 numbers")
	}
	return nil
}

func expectDelim(dec *json.Decoder, want json.Delim, msg string) error {
	t, err := dec.Token()
	if err != nil {
		return syntaxError(err)
	}
	if d, ok := t.(json.Delim); !ok || d != want {
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
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fail(errInvalidRequest, "malformed JSON at byte %d: %v", se.Offset, se)
	}
	return fail(errInvalidRequest, "malformed JSON: %v", err)
}

// fieldError explains a value that does not fit its field.
func fieldError(field string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		where := field
		if te.Field != "" {
			where += "." + te.Field
		}
		return fail(errInvalidRequest, "%s: expected %s, got JSON %s", where, te.Type, te.Value)
	}
	if msg := err.Error(); len(msg) > 20 && msg[:20] == "json: unknown field " {
		return fail(errInvalidRequest, "%s: unknown field %s (a message has to, body and optionally from)", field, msg[20:])
	}
	return syntaxError(err)
}
