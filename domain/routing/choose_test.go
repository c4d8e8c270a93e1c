package routing_test

import (
	"fmt"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
)

const chooseTable = `{"routes":[
  {"id":"de-mobile","prefixes":["+4915","+4916","+4917"],"providers":[
    {"provider":"sim-a","priority":1,"weight":70},
    {"provider":"sim-b","priority":1,"weight":30},
    {"provider":"sim-c","priority":2,"weight":100}]},
  {"id":"de","countries":["DE"],"providers":[{"provider":"sim-b","priority":1,"weight":1}]},
  {"id":"default","prefixes":["+"],"providers":[
    {"provider":"sim-c","priority":3,"weight":100},
    {"provider":"sim-a","priority":1,"weight":100},
    {"provider":"sim-b","priority":2,"weight":100}]}
]}`

func mustParse(t testing.TB, s string) *routing.Table {
	t.Helper()
	tab, err := routing.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return tab
}

// states builds a health function from a fixed map; providers not in it are closed.
func states(m map[string]routing.State) func(string) routing.State {
	return func(p string) routing.State { return m[p] }
}

func cand(p string, prio, weight int, eligible bool, reason string) domain.RouteCandidate {
	return domain.RouteCandidate{Provider: p, Priority: prio, Weight: weight, Eligible: eligible, Reason: reason}
}

func TestChoose(t *testing.T) {
	tab := mustParse(t, chooseTable)
	noCatchAll := mustParse(t, `{"routes":[{"id":"uk","prefixes":["+44"],"providers":[{"provider":"sim-a","priority":1,"weight":1}]}]}`)
	const us = "+12025550123" // served by the default route only
	tests := []struct {
		name    string
		table   *routing.Table
		req     routing.Request
		health  map[string]routing.State
		want    domain.RouteDecision
		wantErr *domain.Failure
	}{
		{name: "primary when all are healthy", table: tab, req: routing.Request{MessageID: "m1", Attempt: 1, To: us},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-a", Reason: "priority 1, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, true, "chosen"),
					cand("sim-b", 2, 100, true, "lower priority"),
					cand("sim-c", 3, 100, true, "lower priority")}}},
		{name: "failover after the primary failed this message", table: tab,
			req: routing.Request{MessageID: "m1", Attempt: 2, To: us, Excluded: []string{"sim-a"}},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-b",
				Reason: "failover: sim-a failed this message; priority 2, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, false, "failed this message earlier"),
					cand("sim-b", 2, 100, true, "chosen"),
					cand("sim-c", 3, 100, true, "lower priority")}}},
		{name: "failover around an open circuit", table: tab, req: routing.Request{MessageID: "m1", Attempt: 1, To: us},
			health: map[string]routing.State{"sim-a": routing.Open},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-b",
				Reason: "failover: sim-a circuit open; priority 2, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, false, "circuit open"),
					cand("sim-b", 2, 100, true, "chosen"),
					cand("sim-c", 3, 100, true, "lower priority")}}},
		{name: "a half-open circuit is probed", table: tab, req: routing.Request{MessageID: "m1", Attempt: 1, To: us},
			health: map[string]routing.State{"sim-a": routing.HalfOpen},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-a", Reason: "priority 1, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, true, "chosen as a probe: circuit half-open"),
					cand("sim-b", 2, 100, true, "lower priority"),
					cand("sim-c", 3, 100, true, "lower priority")}}},
		{name: "excluded and open together", table: tab,
			req:    routing.Request{MessageID: "m1", Attempt: 3, To: us, Excluded: []string{"sim-a"}},
			health: map[string]routing.State{"sim-a": routing.Open, "sim-b": routing.Open},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-c",
				Reason: "failover: sim-a failed this message, sim-b circuit open; priority 3, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, false, "failed this message earlier"),
					cand("sim-b", 2, 100, false, "circuit open"),
					cand("sim-c", 3, 100, true, "chosen")}}},
		{name: "an excluded provider outside the route changes nothing", table: tab,
			req: routing.Request{MessageID: "m1", Attempt: 1, To: us, Excluded: []string{"sim-z"}},
			want: domain.RouteDecision{RouteID: "default", Provider: "sim-a", Reason: "priority 1, weight 100 of 100",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 100, true, "chosen"),
					cand("sim-b", 2, 100, true, "lower priority"),
					cand("sim-c", 3, 100, true, "lower priority")}}},
		{name: "the remaining provider of a weighted priority takes it all", table: tab,
			req: routing.Request{MessageID: "m1", Attempt: 2, To: "+4915112345678", Excluded: []string{"sim-a"}},
			want: domain.RouteDecision{RouteID: "de-mobile", Provider: "sim-b",
				Reason: "failover: sim-a failed this message; priority 1, weight 30 of 30",
				Candidates: []domain.RouteCandidate{
					cand("sim-a", 1, 70, false, "failed this message earlier"),
					cand("sim-b", 1, 30, true, "chosen"),
					cand("sim-c", 2, 100, true, "lower priority")}}},
		{name: "country route", table: tab, req: routing.Request{MessageID: "m1", Attempt: 1, To: "+49301234567", Country: "de"},
			want: domain.RouteDecision{RouteID: "de", Provider: "sim-b", Reason: "priority 1, weight 1 of 1",
				Candidates: []domain.RouteCandidate{cand("sim-b", 1, 1, true, "chosen")}}},
		{name: "no route", table: noCatchAll, req: routing.Request{MessageID: "m1", Attempt: 1, To: us, Country: "us"},
			wantErr: &domain.Failure{Code: domain.CodeNoRoute, Stage: domain.StageRouting, Permanent: true,
				Reason: "no route matches the destination or its country US"}},
		{name: "no route without a country", table: noCatchAll, req: routing.Request{MessageID: "m1", Attempt: 1, To: us},
			wantErr: &domain.Failure{Code: domain.CodeNoRoute, Stage: domain.StageRouting, Permanent: true,
				Reason: "no route matches the destination"}},
		{name: "every provider failed this message", table: tab,
			req:    routing.Request{MessageID: "m1", Attempt: 4, To: us, Excluded: []string{"sim-c", "sim-a", "sim-b"}},
			health: map[string]routing.State{"sim-b": routing.Open}, // failed earlier outranks the circuit
			want: domain.RouteDecision{RouteID: "default", Candidates: []domain.RouteCandidate{
				cand("sim-a", 1, 100, false, "failed this message earlier"),
				cand("sim-b", 2, 100, false, "failed this message earlier"),
				cand("sim-c", 3, 100, false, "failed this message earlier")}},
			wantErr: &domain.Failure{Code: domain.CodeRoutesExhausted, Stage: domain.StageRouting, Permanent: true,
				Reason: "every provider of route default failed this message: sim-a, sim-b, sim-c"}},
		{name: "the rest are behind open circuits", table: tab,
			req:    routing.Request{MessageID: "m1", Attempt: 2, To: us, Excluded: []string{"sim-a"}},
			health: map[string]routing.State{"sim-b": routing.Open, "sim-c": routing.Open},
			want: domain.RouteDecision{RouteID: "default", Candidates: []domain.RouteCandidate{
				cand("sim-a", 1, 100, false, "failed this message earlier"),
				cand("sim-b", 2, 100, false, "circuit open"),
				cand("sim-c", 3, 100, false, "circuit open")}},
			wantErr: &domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageRouting, Permanent: false,
				Reason: "route default: circuit open for sim-b, sim-c; failed this message earlier: sim-a"}},
		{name: "every circuit open", table: tab, req: routing.Request{MessageID: "m1", Attempt: 1, To: "+4930123", Country: "DE"},
			health: map[string]routing.State{"sim-b": routing.Open},
			want: domain.RouteDecision{RouteID: "de", Candidates: []domain.RouteCandidate{
				cand("sim-b", 1, 1, false, "circuit open")}},
			wantErr: &domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageRouting, Permanent: false,
				Reason: "route de: circuit open for sim-b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var health func(string) routing.State
			if tt.health != nil {
				health = states(tt.health)
			}
			got, gotErr := routing.Choose(tt.table, tt.req, health)
			if !reflect.DeepEqual(gotErr, tt.wantErr) {
				t.Errorf("failure\n got %+v\nwant %+v", gotErr, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("decision\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

// TestChooseWeightedSplit checks that over many messages the weighted pick
// follows the weights, and that each decision explains itself. The pick is
// deterministic, so a pass is stable; the tolerance (4.5 standard deviations
// of a true random split) is still tight enough that shifting one unit of
// weight between providers (an off-by-one in the walk) fails the 1:99 case.
func TestChooseWeightedSplit(t *testing.T) {
	const n = 10_000
	byMessage := func(i int) routing.Request {
		return routing.Request{MessageID: fmt.Sprintf("01JDQ5W2G3%016d", i), Attempt: 1, To: "+4915112345678"}
	}
	byAttempt := func(i int) routing.Request {
		return routing.Request{MessageID: "01JDQ5W2G3XKZ8M4B6N7P9R0ST", Attempt: i + 1, To: "+4915112345678"}
	}
	tests := []struct {
		name    string
		weights []int
		req     func(i int) routing.Request
	}{
		{"70:30 across messages", []int{70, 30}, byMessage},
		{"70:30 across attempts of one message", []int{70, 30}, byAttempt},
		{"1:1", []int{1, 1}, byMessage},
		{"1:99", []int{1, 99}, byMessage},
		{"50:30:20", []int{50, 30, 20}, byMessage},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			route := routing.Route{ID: "split", Prefixes: []string{"+49"}}
			total := 0
			for i, w := range tt.weights {
				route.Providers = append(route.Providers, routing.Provider{Name: fmt.Sprint("p", i), Priority: 1, Weight: w})
				total += w
			}
			tab, err := routing.NewTable([]routing.Route{route})
			if err != nil {
				t.Fatal(err)
			}
			count := map[string]int{}
			for i := range n {
				dec, f := routing.Choose(tab, tt.req(i), nil)
				if f != nil {
					t.Fatalf("unexpected failure %+v", f)
				}
				count[dec.Provider]++
				for k, c := range dec.Candidates {
					p := route.Providers[k]
					switch {
					case c.Provider == dec.Provider && (c.Reason != "chosen" ||
						dec.Reason != fmt.Sprintf("priority 1, weight %d of %d", p.Weight, total)):
						t.Fatalf("%s chosen, candidate reason %q, decision reason %q", c.Provider, c.Reason, dec.Reason)
					case c.Provider != dec.Provider && c.Reason != "not drawn in the weighted split":
						t.Fatalf("%s not chosen, reason %q", c.Provider, c.Reason)
					}
				}
			}
			for _, p := range route.Providers {
				share := float64(p.Weight) / float64(total)
				want := share * n
				tol := 4.5*math.Sqrt(n*share*(1-share)) + 1
				if got := float64(count[p.Name]); math.Abs(got-want) > tol {
					t.Errorf("%s (weight %d of %d) chosen %v times in %d, want %.0f±%.0f; split %v",
						p.Name, p.Weight, total, got, n, want, tol, count)
				}
			}
		})
	}
}

// TestChooseIsDeterministic checks that a decision depends only on its input,
// and on both the message id and the attempt.
func TestChooseIsDeterministic(t *testing.T) {
	tab := mustParse(t, chooseTable)
	byAttempt, byID := false, false
	for i := range 200 {
		req := routing.Request{MessageID: fmt.Sprintf("msg-%d", i), Attempt: 1, To: "+4916012345"}
		first, _ := routing.Choose(tab, req, nil)
		again, _ := routing.Choose(tab, req, nil)
		if !reflect.DeepEqual(first, again) {
			t.Fatalf("same request, different decisions: %+v and %+v", first, again)
		}
		req.Attempt = 2
		if next, _ := routing.Choose(tab, req, nil); next.Provider != first.Provider {
			byAttempt = true
		}
		req = routing.Request{MessageID: fmt.Sprintf("msg-%d", i+1), Attempt: 1, To: "+4916012345"}
		if next, _ := routing.Choose(tab, req, nil); next.Provider != first.Provider {
			byID = true
		}
	}
	if !byAttempt || !byID {
		t.Errorf("the pick ignores the attempt (%v) or the message id (%v)", !byAttempt, !byID)
	}
}

// TestChooseWithBreaker runs Choose against a real Breaker through a provider
// outage: failover while open, one probe while half-open, back on recovery.
func TestChooseWithBreaker(t *testing.T) {
	tab := routing.DefaultTable()
	br, err := routing.NewBreaker(routing.BreakerConfig{Window: 10 * time.Second, MinSamples: 3, FailureRatio: 0.5,
		Cooldown: 5 * time.Second, HalfOpenProbes: 1})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at     time.Duration
		before func(now time.Time)
		want   string // provider chosen
		reason string // the decision's reason
	}{
		{0, nil, "sim-a", "priority 1, weight 100 of 100"},
		{1 * time.Second, func(now time.Time) {
			for range 3 {
				br.Record("sim-a", false, now)
			}
		}, "sim-b", "failover: sim-a circuit open; priority 2, weight 100 of 100"},
		{6 * time.Second, nil, "sim-a", "priority 1, weight 100 of 100"}, // the probe; Allow takes its slot below
		{6 * time.Second, nil, "sim-b", "failover: sim-a circuit open; priority 2, weight 100 of 100"},
		{7 * time.Second, func(now time.Time) { br.Record("sim-a", true, now) }, "sim-a", "priority 1, weight 100 of 100"},
	}
	for i, s := range steps {
		now := t0.Add(s.at)
		if s.before != nil {
			s.before(now)
		}
		dec, f := routing.Choose(tab, routing.Request{MessageID: fmt.Sprint("m", i), Attempt: 1, To: "+4915112345678"}, br.Health(now))
		if f != nil {
			t.Fatalf("step %d: unexpected failure %+v", i, f)
		}
		if dec.Provider != s.want || dec.Reason != s.reason {
			t.Fatalf("step %d: chose %s (%q), want %s (%q)", i, dec.Provider, dec.Reason, s.want, s.reason)
		}
		if !br.Allow(dec.Provider, now) {
			t.Fatalf("step %d: Choose picked %s but the breaker refuses it", i, dec.Provider)
		}
	}
}

func TestChooseNilTable(t *testing.T) {
	_, f := routing.Choose(nil, routing.Request{MessageID: "m", Attempt: 1, To: "+49151"}, nil)
	if f == nil || f.Code != domain.CodeNoRoute || !f.Permanent || !strings.Contains(f.Reason, "no route") {
		t.Errorf("Choose(nil table) failure = %+v, want a permanent no_route", f)
	}
}

// BenchmarkChoose measures the per-message cost on the dispatch hot path. The
// default table is the baseline; a table of 200 routes with 1,000 prefixes
// shows that matching does not grow with the table (it is at most 16 map
// lookups).
func BenchmarkChoose(b *testing.B) {
	var big strings.Builder
	big.WriteString(`{"routes":[`)
	for r := range 200 {
		fmt.Fprintf(&big, `{"id":"r%d","prefixes":[`, r)
		for p := range 5 {
			if p > 0 {
				big.WriteString(",")
			}
			fmt.Fprintf(&big, `"+%d%02d"`, 100+r, p)
		}
		big.WriteString(`],"providers":[{"provider":"sim-a","priority":1,"weight":70},{"provider":"sim-b","priority":1,"weight":30},{"provider":"sim-c","priority":2,"weight":1}]},`)
	}
	big.WriteString(`{"id":"default","prefixes":["+"],"providers":[{"provider":"sim-a","priority":1,"weight":1}]}]}`)

	br, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	if err != nil {
		b.Fatal(err)
	}
	health := br.Health(t0)
	cases := []struct {
		name  string
		table *routing.Table
		req   routing.Request
	}{
		{"default-table", routing.DefaultTable(), routing.Request{MessageID: "01JDQ5W2G3XKZ8M4B6N7P9R0ST", Attempt: 1, To: "+4915112345678"}},
		{"default-table-failover", routing.DefaultTable(),
			routing.Request{MessageID: "01JDQ5W2G3XKZ8M4B6N7P9R0ST", Attempt: 2, To: "+4915112345678", Excluded: []string{"sim-a"}}},
		{"1000-prefixes-weighted", mustParse(b, big.String()), routing.Request{MessageID: "01JDQ5W2G3XKZ8M4B6N7P9R0ST", Attempt: 1, To: "+29901234567"}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			if dec, f := routing.Choose(c.table, c.req, health); f != nil || dec.Provider == "" {
				b.Fatalf("benchmark request does not route: %+v %+v", dec, f)
			}
			b.ReportAllocs()
			start := time.Now()
			for b.Loop() {
				routing.Choose(c.table, c.req, health)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "decisions/s")
		})
	}
}
