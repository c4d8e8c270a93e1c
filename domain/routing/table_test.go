package routing

import (
	"errors"
	"strings"
	"testing"
)

const exampleTable = `{"routes":[
  {"id":"de-mobile","prefixes":["+4915","+4916","+4917"],"providers":[
    {"provider":"sim-a","priority":1,"weight":70},
    {"provider":"sim-b","priority":1,"weight":30},
    {"provider":"sim-c","priority":2,"weight":100}]},
  {"id":"de-berlin","prefixes":["+4930"],"providers":[{"provider":"sim-b","priority":1,"weight":1}]},
  {"id":"germany","countries":["DE"],"providers":[{"provider":"sim-c","priority":1,"weight":1}]},
  {"id":"nanp","prefixes":["+1"],"countries":["us","CA"],"providers":[{"provider":"sim-a","priority":1,"weight":1}]},
  {"id":"default","prefixes":["+"],"providers":[{"provider":"sim-a","priority":1,"weight":1}]}
]}`

func TestMatchPrecedence(t *testing.T) {
	tab, err := Parse([]byte(exampleTable))
	if err != nil {
		t.Fatal(err)
	}
	noCatchAll, err := NewTable([]Route{
		{ID: "fr", Countries: []string{"FR"}, Providers: []Provider{{Name: "p", Priority: 1, Weight: 1}}},
		{ID: "uk", Prefixes: []string{"+44"}, Providers: []Provider{{Name: "p", Priority: 1, Weight: 1}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		table       *Table
		to, country string
		want        string // route id; "" for no match
	}{
		{"longest prefix wins", tab, "+491511234567", "DE", "de-mobile"},
		{"another prefix of the same route", tab, "+491701234567", "", "de-mobile"},
		{"a prefix beats the country", tab, "+49301234567", "DE", "de-berlin"},
		{"country when no prefix matches", tab, "+49891234567", "DE", "germany"},
		{"country is case-insensitive", tab, "+49891234567", "de", "germany"},
		{"a route matches by prefix and by country", tab, "+12025550123", "", "nanp"},
		{"lower-case country in the table", tab, "+999", "US", "nanp"},
		{"catch-all when nothing else matches", tab, "+33612345678", "FR", "default"},
		{"catch-all below a country", tab, "+49891234567", "", "default"},
		{"a prefix longer than the number cannot match", tab, "+4915", "", "de-mobile"},
		{"number shorter than every prefix", tab, "+4", "", "default"},
		{"without catch-all, country still matches", noCatchAll, "+33612345678", "FR", "fr"},
		{"without catch-all, nothing matches", noCatchAll, "+33612345678", "", ""},
		{"not E.164 is not caught by the catch-all", tab, "4915112345678", "", ""},
		{"nil table", nil, "+4915112345678", "DE", ""},
		{"zero table", &Table{}, "+4915112345678", "DE", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ""
			if r := tt.table.match(tt.to, tt.country); r != nil {
				got = r.ID
			}
			if got != tt.want {
				t.Errorf("match(%q, %q) = %q, want %q", tt.to, tt.country, got, tt.want)
			}
		})
	}
}

func TestParseRejects(t *testing.T) {
	const p = `"providers":[{"provider":"sim-a","priority":1,"weight":1}]`
	tests := []struct {
		name string
		json string
		want []string // every substring must appear in the error
	}{
		{"not JSON", `{"routes":[`, []string{"unexpected EOF"}},
		{"trailing data", `{"routes":[{"id":"a","prefixes":["+"],` + p + `}]} {}`, []string{"after the table"}},
		{"misspelt field", `{"routes":[{"id":"a","prefix":["+49"],` + p + `}]}`, []string{`unknown field "prefix"`}},
		{"no routes", `{"routes":[]}`, []string{"no routes"}},
		{"null", `null`, []string{"no routes"}},
		{"missing id", `{"routes":[{"prefixes":["+49"],` + p + `}]}`, []string{`routes[0] "": id is required`}},
		{"duplicate id", `{"routes":[{"id":"a","prefixes":["+49"],` + p + `},{"id":"a","prefixes":["+33"],` + p + `}]}`,
			[]string{`routes[1] "a": id already used by routes[0]`}},
		{"nothing to match", `{"routes":[{"id":"a",` + p + `}]}`, []string{`routes[0] "a": needs at least one prefix or country`}},
		{"prefix without plus", `{"routes":[{"id":"a","prefixes":["4915"],` + p + `}]}`, []string{`routes[0] "a": prefixes[0] "4915"`}},
		{"prefix with letters", `{"routes":[{"id":"a","prefixes":["+49x"],` + p + `}]}`, []string{`prefixes[0] "+49x"`}},
		{"prefix too long", `{"routes":[{"id":"a","prefixes":["+1234567890123456"],` + p + `}]}`, []string{`prefixes[0] "+1234567890123456"`}},
		{"empty prefix", `{"routes":[{"id":"a","prefixes":[""],` + p + `}]}`, []string{`prefixes[0] ""`}},
		{"prefix in two routes", `{"routes":[{"id":"a","prefixes":["+49"],` + p + `},{"id":"b","prefixes":["+49"],` + p + `}]}`,
			[]string{`routes[1] "b": prefix "+49" already used by route "a"`}},
		{"two catch-alls", `{"routes":[{"id":"a","prefixes":["+"],` + p + `},{"id":"b","prefixes":["+"],` + p + `}]}`,
			[]string{`routes[1] "b": prefix "+" already used by route "a"`}},
		{"bad country", `{"routes":[{"id":"a","countries":["DEU"],` + p + `}]}`, []string{`routes[0] "a": countries[0] "DEU"`}},
		{"country in two routes", `{"routes":[{"id":"a","countries":["DE"],` + p + `},{"id":"b","countries":["de"],` + p + `}]}`,
			[]string{`routes[1] "b": country "DE" already used by route "a"`}},
		{"no providers", `{"routes":[{"id":"a","prefixes":["+"],"providers":[]}]}`, []string{`routes[0] "a": needs at least one provider`}},
		{"nameless provider", `{"routes":[{"id":"a","prefixes":["+"],"providers":[{"priority":1,"weight":1}]}]}`,
			[]string{`routes[0] "a": providers[0] "": provider name is required`}},
		{"provider twice", `{"routes":[{"id":"a","prefixes":["+"],"providers":[{"provider":"x","priority":1,"weight":1},{"provider":"x","priority":2,"weight":1}]}]}`,
			[]string{`providers[1] "x": listed twice`}},
		{"missing priority", `{"routes":[{"id":"a","prefixes":["+"],"providers":[{"provider":"x","weight":1}]}]}`,
			[]string{`providers[0] "x": priority must be at least 1, got 0`}},
		{"missing weight", `{"routes":[{"id":"a","prefixes":["+"],"providers":[{"provider":"x","priority":1}]}]}`,
			[]string{`providers[0] "x": weight must be between 1 and 1000000, got 0`}},
		{"weight too large", `{"routes":[{"id":"a","prefixes":["+"],"providers":[{"provider":"x","priority":1,"weight":1000001}]}]}`,
			[]string{`weight must be between`}},
		{"every problem is listed", `{"routes":[{"id":"a","prefixes":["49"],` + p + `},{"id":"b","countries":["D"],` + p + `}]}`,
			[]string{`routes[0] "a": prefixes[0] "49"`, `routes[1] "b": countries[0] "D"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatalf("Parse accepted %s", tt.json)
			}
			if tab != nil {
				t.Errorf("Parse returned a table along with %v", err)
			}
			if !errors.Is(err, ErrInvalidTable) {
				t.Errorf("error %v does not wrap ErrInvalidTable", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseSortsProvidersByPriority(t *testing.T) {
	tab, err := Parse([]byte(`{"routes":[{"id":"a","prefixes":["+"],"providers":[
		{"provider":"c","priority":3,"weight":1},{"provider":"a1","priority":1,"weight":1},
		{"provider":"b","priority":2,"weight":1},{"provider":"a2","priority":1,"weight":1}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range tab.match("+1", "").Providers {
		got = append(got, p.Name)
	}
	if strings.Join(got, " ") != "a1 a2 b c" {
		t.Errorf("providers in order %v, want priority order keeping config order within a priority", got)
	}
}

func TestNewTableCopiesItsInput(t *testing.T) {
	routes := []Route{{ID: "a", Prefixes: []string{"+49"}, Providers: []Provider{{Name: "x", Priority: 1, Weight: 1}}}}
	tab, err := NewTable(routes)
	if err != nil {
		t.Fatal(err)
	}
	routes[0].ID = "changed"
	routes[0].Providers[0].Name = "changed"
	r := tab.match("+491", "")
	if r == nil || r.ID != "a" || r.Providers[0].Name != "x" {
		t.Errorf("table changed with its input: %+v", r)
	}
}

func TestDefaultTableServesEveryDestination(t *testing.T) {
	tab := DefaultTable()
	for _, to := range []string{"+4915112345678", "+12025550123", "+861012345678"} {
		r := tab.match(to, "")
		if r == nil {
			t.Fatalf("no route for %s", to)
		}
		want := []Provider{{Name: "sim-a", Priority: 1, Weight: 100}, {Name: "sim-b", Priority: 2, Weight: 100}}
		if len(r.Providers) != len(want) || r.Providers[0] != want[0] || r.Providers[1] != want[1] {
			t.Errorf("route for %s offers %+v, want %+v", to, r.Providers, want)
		}
	}
}
