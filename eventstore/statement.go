package eventstore

import (
	"strings"
)

// StatementName is the label afterok_db_query_seconds gives a statement:
// never its text, which would put SQL (and its comments) into label
// values and split one statement into several series when its whitespace
// changed. A statement that starts with a "-- name: <name>" line (sqlc's
// convention) is called that; any other is named by its verb and the first
// table it reads or writes ("select:events", "insert:streams",
// "update:read_messages"), or the function it calls
// ("select:pg_advisory_lock"). Names are bounded by afterok's tables and
// verbs, whatever the statement's parameters.
func StatementName(sql string) string {
	s := strings.TrimSpace(sql)
	if rest, ok := strings.CutPrefix(s, "-- name:"); ok {
		line, _, _ := strings.Cut(rest, "\n")
		if f := strings.Fields(line); len(f) > 0 {
			if n := labelSafe(f[0]); n != "" {
				return n
			}
		}
	}
	w := sqlWords(s)
	if len(w) == 0 {
		return "empty"
	}
	verb := w[0]
	switch verb {
	case "select", "with", "values", "show":
	case "insert", "update", "delete", "copy", "vacuum", "analyze", "lock", "truncate":
	case "create", "alter", "drop", "begin", "commit", "rollback", "savepoint", "release", "set", "reset", "listen", "notify", "explain", "do":
		return verb // DDL and session statements: the verb is enough
	default:
		return "other"
	}
	if t := subject(verb, w); t != "" {
		return verb + ":" + t
	}
	return verb
}

// subject is the table (or function) a statement is about.
func subject(verb string, w []string) string {
	after := func(kw string) string {
		for i := 1; i+1 < len(w); i++ {
			if w[i] == kw && isName(w[i+1]) {
				return w[i+1]
			}
		}
		return ""
	}
	switch verb {
	case "insert":
		return after("into")
	case "update", "copy", "lock", "truncate":
		for _, x := range w[1:] {
			if isName(x) && x != "only" && x != "table" {
				return x
			}
		}
		return ""
	case "delete":
		return after("from")
	case "vacuum", "analyze", "show":
		return w[len(w)-1]
	}
	// select, with, values: the first relation after FROM or JOIN that is
	// not a function (unnest(…) AS u) or a subquery, else the first function.
	for i := 1; i+1 < len(w); i++ {
		if (w[i] == "from" || w[i] == "join") && isName(w[i+1]) && (i+2 >= len(w) || w[i+2] != "(") &&
			w[i+1] != "lateral" && w[i+1] != "only" {
			return w[i+1]
		}
	}
	for i := 1; i+1 < len(w); i++ {
		if isName(w[i]) && w[i+1] == "(" && !sqlKeyword[w[i]] {
			return w[i]
		}
	}
	return ""
}

// sqlKeyword are words followed by "(" that are not the function a
// statement is about.
var sqlKeyword = map[string]bool{"select": true, "as": true, "materialized": true, "in": true, "exists": true,
	"values": true, "any": true, "all": true, "coalesce": true, "count": true, "max": true, "min": true, "sum": true,
	"not": true, "and": true, "or": true, "where": true, "on": true, "using": true, "filter": true, "over": true,
	"unnest": true, "array": true, "row": true, "cast": true, "greatest": true, "least": true, "jsonb_build_object": true}

// sqlWords lowercases sql's identifiers and keywords, drops comments,
// string literals, parameters and operators, and keeps "(" (which tells a
// function from a table). Quoted identifiers lose their quotes.
func sqlWords(sql string) []string {
	var out []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			out = append(out, strings.ToLower(b.String()))
			b.Reset()
		}
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			flush()
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			flush()
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return out
			}
			i += end + 3
		case c == '\'':
			flush()
			for i++; i < len(sql) && sql[i] != '\''; i++ {
			}
		case c == '$': // a parameter ($1) is not a word
			flush()
			for i+1 < len(sql) && sql[i+1] >= '0' && sql[i+1] <= '9' {
				i++
			}
		case c == '"':
			continue // "streams" is streams
		case c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' && b.Len() > 0:
			b.WriteByte(c)
		case c == '(':
			flush()
			out = append(out, "(")
		default:
			flush()
		}
	}
	flush()
	return out
}

func isName(w string) bool { return w != "(" && w != "" }

// labelSafe keeps a declared name to [a-z0-9_.:-], at most 64 characters.
func labelSafe(n string) string {
	var b strings.Builder
	for _, c := range strings.ToLower(n) {
		if c == '_' || c == '.' || c == ':' || c == '-' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' {
			b.WriteRune(c)
		}
	}
	s := b.String()
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}
