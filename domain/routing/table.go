package routing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
)

// ErrInvalidTable is wrapped by every error Parse and NewTable return, so a
// config loader can tell a bad table from an unreadable file with errors.Is.
var ErrInvalidTable = errors.New("invalid route table")

// Limits that keep a table sane. An E.164 number has at most 15 digits, so a
// longer prefix could never match. The weight cap keeps weight sums far from
// overflow and is finer than any split an operator will ask for.
const (
	maxPrefixDigits = 15
	maxWeight       = 1_000_000
)

// Provider is one provider a route offers, as configured.
//
// Priority and Weight are required and at least 1, so a forgotten field is an
// error rather than silently becoming the top priority or a never-drawn
// weight. The lowest Priority number is preferred; among eligible providers
// of the same priority, traffic is split in proportion to Weight.
type Provider struct {
	Name     string `json:"provider"`
	Priority int    `json:"priority"`
	Weight   int    `json:"weight"`
}

// Route is one entry of the table: the destinations it serves and the
// providers that may carry them.
//
// Prefixes are E.164 prefixes ("+4915"); the prefix "+" alone is the
// catch-all. Countries are ISO 3166-1 alpha-2 codes, matched against the
// country the caller derived from the number. A route needs at least one
// prefix or country.
type Route struct {
	ID        string     `json:"id"`
	Prefixes  []string   `json:"prefixes,omitempty"`
	Countries []string   `json:"countries,omitempty"`
	Providers []Provider `json:"providers"`
}

// Table is a validated, immutable route table. Build one with Parse, NewTable
// or DefaultTable; the zero value routes nothing.
//
// A destination is matched in this order of precedence:
//
//  1. the route with the longest E.164 prefix that the number starts with
//     ("+4915" beats "+49"), not counting the catch-all;
//  2. otherwise the route listing the destination's country;
//  3. otherwise the catch-all route (prefix "+"), if there is one.
//
// Any real prefix beats a country, because operators write prefixes to carve
// exceptions (a mobile range, a ported block) out of a country's default.
// Because a prefix, a country and the catch-all may each appear in only one
// route, the match is never ambiguous.
type Table struct {
	routes    []Route
	byPrefix  map[string]*Route
	byCountry map[string]*Route
	catchAll  *Route
	longest   int // length in bytes of the longest prefix, bounding the lookup
}

// DefaultTable returns the table afterok dev ships: every destination goes to
// the simulated provider sim-a first and fails over to sim-b.
func DefaultTable() *Table {
	t, err := NewTable([]Route{{
		ID:       "default",
		Prefixes: []string{"+"},
		Providers: []Provider{
			{Name: "sim-a", Priority: 1, Weight: 100},
			{Name: "sim-b", Priority: 2, Weight: 100},
		},
	}})
	if err != nil {
		panic("routing: default table is invalid: " + err.Error()) // a programming error, caught by tests
	}
	return t
}

// tableJSON is the document Parse reads: {"routes": [...]}.
type tableJSON struct {
	Routes []Route `json:"routes"`
}

// Parse reads a route table from JSON and validates it. Unknown fields are
// rejected, so a misspelt key ("weigth") is reported instead of ignored. The
// error lists every problem found, each naming its route.
func Parse(data []byte) (*Table, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var doc tableJSON
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTable, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: unexpected data after the table", ErrInvalidTable)
	}
	return NewTable(doc.Routes)
}

// NewTable validates routes and builds a table from them. The routes are
// copied; later changes to the argument do not affect the table.
func NewTable(routes []Route) (*Table, error) {
	t := &Table{
		routes:    make([]Route, len(routes)),
		byPrefix:  make(map[string]*Route),
		byCountry: make(map[string]*Route),
	}
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if len(routes) == 0 {
		fail("no routes")
	}
	ids := make(map[string]int, len(routes))

	for i, in := range routes {
		r := &t.routes[i]
		r.ID = in.ID
		name := fmt.Sprintf("routes[%d] %q", i, in.ID)
		if in.ID == "" {
			fail("%s: id is required", name)
		} else if j, dup := ids[in.ID]; dup {
			fail("%s: id already used by routes[%d]", name, j)
		}
		ids[in.ID] = i
		if len(in.Prefixes) == 0 && len(in.Countries) == 0 {
			fail("%s: needs at least one prefix or country", name)
		}

		for k, p := range in.Prefixes {
			if !validPrefix(p) {
				fail("%s: prefixes[%d] %q: want \"+\" followed by up to %d digits", name, k, p, maxPrefixDigits)
				continue
			}
			other := t.byPrefix[p]
			if p == "+" {
				other = t.catchAll
			}
			if other != nil {
				fail("%s: prefix %q already used by route %q", name, p, other.ID)
				continue
			}
			r.Prefixes = append(r.Prefixes, p)
			if p == "+" {
				// The catch-all ranks below countries, so it is kept apart
				// from the prefixes that outrank them.
				t.catchAll = r
				continue
			}
			t.byPrefix[p] = r
			t.longest = max(t.longest, len(p))
		}

		for k, c := range in.Countries {
			cc := strings.ToUpper(c)
			if !validCountry(cc) {
				fail("%s: countries[%d] %q: want an ISO 3166-1 alpha-2 code", name, k, c)
				continue
			}
			if other, dup := t.byCountry[cc]; dup {
				fail("%s: country %q already used by route %q", name, cc, other.ID)
				continue
			}
			r.Countries = append(r.Countries, cc)
			t.byCountry[cc] = r
		}

		if len(in.Providers) == 0 {
			fail("%s: needs at least one provider", name)
		}
		seen := make(map[string]bool, len(in.Providers))
		for k, p := range in.Providers {
			pname := fmt.Sprintf("%s: providers[%d] %q", name, k, p.Name)
			switch {
			case strings.TrimSpace(p.Name) == "":
				fail("%s: provider name is required", pname)
			case seen[p.Name]:
				fail("%s: listed twice", pname)
			}
			seen[p.Name] = true
			if p.Priority < 1 {
				fail("%s: priority must be at least 1, got %d", pname, p.Priority)
			}
			if p.Weight < 1 || p.Weight > maxWeight {
				fail("%s: weight must be between 1 and %d, got %d", pname, maxWeight, p.Weight)
			}
		}
		// Sorted once here, so Choose can take the first eligible provider's
		// priority as the best one and decisions list candidates in the order
		// they were considered. Stable, to keep the configured order within a
		// priority.
		r.Providers = append([]Provider(nil), in.Providers...)
		sort.SliceStable(r.Providers, func(a, b int) bool { return r.Providers[a].Priority < r.Providers[b].Priority })
	}

	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrInvalidTable, strings.Join(problems, "; "))
	}
	return t, nil
}

// match finds the route serving a destination, following the precedence
// documented on Table. It does not allocate: map lookups with a substring key
// do not copy it.
func (t *Table) match(to, country string) *Route {
	if t == nil {
		return nil
	}
	for n := min(len(to), t.longest); n >= 2; n-- {
		if r, ok := t.byPrefix[to[:n]]; ok {
			return r
		}
	}
	if country != "" {
		if r, ok := t.byCountry[strings.ToUpper(country)]; ok {
			return r
		}
	}
	if t.catchAll != nil && strings.HasPrefix(to, "+") {
		return t.catchAll
	}
	return nil
}

func validPrefix(p string) bool {
	if len(p) < 1 || len(p) > 1+maxPrefixDigits || p[0] != '+' {
		return false
	}
	for i := 1; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	return true
}

func validCountry(c string) bool {
	return len(c) == 2 && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z'
}
