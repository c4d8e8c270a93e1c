package api

import (
	"errors"
	"io"
	"net/http"
	"reflect"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
)

// maxSmallBody bounds the body of an account, credit or key request: a
// few fields, never more than a few hundred bytes in honest use.
const maxSmallBody = 64 << 10

// decodeSmall reads a small JSON object body into v, strictly: malformed
// JSON, a repeated or unknown member, text that is not valid Unicode (an
// unpaired surrogate escape such as "\ud800" included), a number that
// does not fit its field (a fraction, or beyond int64) are 400
// invalid_request naming the field. An empty body decodes as {} when
// optional. Values (a NUL in a text, say) are the caller's to check.
func decodeSmall(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxSmallBody))
	if err != nil {
		return syntaxError(err)
	}
	if len(raw) == 0 && optional {
		return nil
	}
	if firstKind(raw) != '{' {
		if err := json.Unmarshal(raw, new(jsontext.Value)); err != nil {
			return syntaxError(err)
		}
		return fail(errInvalidRequest, "the body must be a JSON object")
	}
	err = json.Unmarshal(raw, v, json.RejectUnknownMembers(true))
	var se *json.SemanticError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &se):
		where := fieldPath("", se.JSONPointer)
		if errors.Is(se.Err, json.ErrUnknownName) {
			return fail(errInvalidRequest, "%s: unknown field", where)
		}
		if se.JSONKind == '0' {
			return fail(errInvalidRequest, "%s: expected an integer within ±9223372036854775807, got %s", where, describe(jsontext.Value(se.JSONValue)))
		}
		return fail(errInvalidRequest, "%s: expected %s, got JSON %s", where, goKindName(se.GoType), kindName(se.JSONKind))
	}
	return syntaxError(err)
}

func firstKind(raw []byte) byte {
	for _, b := range raw {
		switch b {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return b
	}
	return 0
}

func goKindName(t reflect.Type) string {
	if t == nil {
		return "another type"
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Int, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Slice:
		return "an array"
	case reflect.Bool:
		return "a boolean"
	case reflect.Struct, reflect.Map:
		return "an object"
	case reflect.Pointer:
		return goKindName(t.Elem())
	}
	return "another type"
}
