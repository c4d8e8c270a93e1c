package pricing

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseRejects(t *testing.T) {
	tests := []struct {
		name, json string
		wantInErr  string // a fragment the error must contain, so it names the problem
	}{
		{"not json", `currency: EUR`, "invalid character"},
		{"not an object", `[]`, "cannot unmarshal"},
		{"trailing data", `{"currency":"EUR","default_micros":1} {}`, "data after the table"},
		{"trailing garbage", `{"currency":"EUR","default_micros":1} x`, "data after the table"},
		{"unknown field", `{"currency":"EUR","defualt_micros":100000,"regions":{"DE":1}}`, "defualt_micros"},
		{"missing currency", `{"regions":{"DE":75000}}`, `currency ""`},
		{"lower-case currency", `{"currency":"eur","regions":{"DE":75000}}`, `currency "eur"`},
		{"currency too long", `{"currency":"EURO","regions":{"DE":75000}}`, `currency "EURO"`},
		{"zero price", `{"currency":"EUR","regions":{"DE":0}}`, `region "DE": price 0`},
		{"negative price", `{"currency":"EUR","regions":{"DE":-5}}`, `region "DE": price -5`},
		{"fractional price", `{"currency":"EUR","regions":{"DE":75000.5}}`, `region "DE": price must be an integer`},
		{"price as string", `{"currency":"EUR","regions":{"DE":"75000"}}`, `region "DE": price must be an integer`},
		{"price beyond int64", `{"currency":"EUR","regions":{"DE":9223372036854775808}}`, `region "DE"`},
		{"zero default", `{"currency":"EUR","default_micros":0,"regions":{"DE":1}}`, "default_micros is 0"},
		{"negative default", `{"currency":"EUR","default_micros":-1}`, "default_micros is -1"},
		{"lower-case region", `{"currency":"EUR","regions":{"de":75000}}`, `region "de" is not`},
		{"alpha-3 region", `{"currency":"EUR","regions":{"DEU":75000}}`, `region "DEU" is not`},
		{"UK is not a region code", `{"currency":"EUR","regions":{"UK":42000}}`, `region "UK" is not`},
		{"duplicate region", `{"currency":"EUR","regions":{"DE":75000,"FR":1,"DE":7500}}`, `region "DE" is listed more than once`},
		{"regions not an object", `{"currency":"EUR","regions":[1]}`, "regions must be an object"},
		{"prices nothing", `{"currency":"EUR","regions":{}}`, "prices nothing"},
		{"prices nothing, regions absent", `{"currency":"EUR"}`, "prices nothing"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := Parse([]byte(tt.json))
			if err == nil {
				t.Fatalf("Parse accepted %s as %+v", tt.json, tab)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not mention %q", err, tt.wantInErr)
			}
		})
	}
}

// TestParseReportsEveryProblem: whoever fixes a price file should see all of
// its mistakes in one go.
func TestParseReportsEveryProblem(t *testing.T) {
	_, err := Parse([]byte(`{"currency":"eur","default_micros":-1,"regions":{"UK":1,"DE":0}}`))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{`currency "eur"`, "default_micros is -1", `region "UK" is not`, `region "DE": price 0`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestParseRoundTrip(t *testing.T) {
	tests := []string{
		`{"currency":"EUR","default_micros":100000,"regions":{"DE":75000,"GB":42000}}`,
		`{"currency":"USD","regions":{"US":9000}}`,
		`{"currency":"CHF","default_micros":60000,"regions":{}}`,
	}
	for _, in := range tests {
		tab, err := Parse([]byte(in))
		if err != nil {
			t.Fatalf("Parse(%s): %v", in, err)
		}
		out, err := json.Marshal(tab)
		if err != nil {
			t.Fatal(err)
		}
		if string(out) != in {
			t.Errorf("round trip of %s gave %s", in, out)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(defaultTable))
	f.Add([]byte(`{"currency":"EUR","regions":{"DE":75000,"DE":1}}`))
	f.Add([]byte(`{"currency":"EUR","default_micros":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := Parse(data)
		if err != nil {
			return
		}
		// Whatever Parse accepts holds the table's invariants and survives a
		// round trip unchanged.
		if !isCurrency(tab.currency) || tab.defaultMicros < 0 || (len(tab.perRegion) == 0 && tab.defaultMicros == 0) {
			t.Fatalf("accepted an invalid table %+v from %q", tab, data)
		}
		for region, price := range tab.perRegion {
			if price <= 0 || len(region) != 2 {
				t.Fatalf("accepted region %q at %d from %q", region, price, data)
			}
		}
		out, err := json.Marshal(tab)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse refuses its own output %s: %v", out, err)
		}
		if again2, _ := json.Marshal(again); string(again2) != string(out) {
			t.Fatalf("round trip changed %s into %s", out, again2)
		}
	})
}
