package routing_test

import (
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/afterok/afterok/domain/routing"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// testBreakerConfig is small enough to walk through by hand: 4 outcomes
// within 10 s at half failing open the circuit for 5 s.
var testBreakerConfig = routing.BreakerConfig{
	Window: 10 * time.Second, MinSamples: 4, FailureRatio: 0.5, Cooldown: 5 * time.Second, HalfOpenProbes: 1,
}

// op is one thing a breaker test does at a point in time.
type op int

const (
	look  op = iota // only check the state
	ok              // Record(ok=true)
	fail            // Record(ok=false)
	allow           // Allow must say yes
	deny            // Allow must say no
)

func (o op) String() string { return [...]string{"look", "ok", "fail", "allow", "deny"}[o] }

type step struct {
	at   time.Duration // since t0
	op   op
	want routing.State // after the op
}

// repeat returns n copies of s, for runs of outcomes.
func repeat(n int, s step) []step {
	out := make([]step, n)
	for i := range out {
		out[i] = s
	}
	return out
}

func seq(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

const (
	closed   = routing.Closed
	open     = routing.Open
	halfOpen = routing.HalfOpen
)

func TestBreakerTransitions(t *testing.T) {
	tripped := repeat(4, step{0, fail, closed})
	tripped[3].want = open
	tests := []struct {
		name  string
		cfg   routing.BreakerConfig
		steps []step
	}{
		{"failures below MinSamples keep it closed", testBreakerConfig,
			seq(repeat(3, step{0, fail, closed}), []step{{0, allow, closed}})},
		{"MinSamples at the failure ratio opens it", testBreakerConfig,
			seq(tripped, []step{{0, deny, open}})},
		{"exactly the ratio opens it", testBreakerConfig,
			[]step{{0, ok, closed}, {0, fail, closed}, {0, ok, closed}, {0, fail, open}}},
		{"just below the ratio keeps it closed", testBreakerConfig,
			seq(repeat(3, step{0, ok, closed}), repeat(2, step{0, fail, closed}), []step{{0, allow, closed}})},
		{"outcomes slide out of the window", testBreakerConfig,
			seq(repeat(3, step{0, fail, closed}), []step{{11 * time.Second, fail, closed}, {11 * time.Second, fail, closed}})},
		{"outcomes inside the window all count", testBreakerConfig,
			seq(repeat(3, step{0, fail, closed}), []step{{9 * time.Second, fail, open}})},
		{"a success does not reset the window", testBreakerConfig,
			[]step{{0, fail, closed}, {1 * time.Second, fail, closed}, {2 * time.Second, ok, closed}, {3 * time.Second, fail, open}}},
		{"open until the cooldown has passed", testBreakerConfig,
			seq(tripped, []step{{5*time.Second - 1, deny, open}, {5 * time.Second, look, halfOpen}})},
		{"outcomes while open are ignored", testBreakerConfig,
			seq(tripped, []step{{1 * time.Second, ok, open}}, repeat(4, step{2 * time.Second, fail, open}),
				[]step{{5 * time.Second, look, halfOpen}})},
		{"half-open allows one probe, then refuses", testBreakerConfig,
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {5 * time.Second, deny, halfOpen}, {6 * time.Second, deny, halfOpen}})},
		{"a successful probe closes it with a fresh window", testBreakerConfig,
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {6 * time.Second, ok, closed}, {6 * time.Second, fail, closed},
				{6 * time.Second, allow, closed}})},
		{"a failed probe opens it for another cooldown", testBreakerConfig,
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {7 * time.Second, fail, open},
				{12*time.Second - 1, deny, open}, {12 * time.Second, allow, halfOpen}})},
		{"an unanswered probe is given back after the cooldown", testBreakerConfig,
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {10*time.Second - 1, deny, halfOpen}, {10 * time.Second, allow, halfOpen}})},
		{"HalfOpenProbes probes may be in flight", withProbes(3),
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {5 * time.Second, allow, halfOpen}, {5 * time.Second, allow, halfOpen},
				{5 * time.Second, deny, halfOpen}})},
		{"a probe outcome gives its slot back even if it fails", withProbes(2),
			seq(tripped, []step{{5 * time.Second, allow, halfOpen}, {5 * time.Second, allow, halfOpen}, {5 * time.Second, deny, halfOpen},
				{6 * time.Second, fail, open}, {11 * time.Second, allow, halfOpen}})},
		{"a clock going back does not resurrect old outcomes", testBreakerConfig,
			[]step{{20 * time.Second, fail, closed}, {20 * time.Second, fail, closed}, {20 * time.Second, fail, closed},
				{0, fail, closed}, {20 * time.Second, look, closed}, {21 * time.Second, fail, open}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := routing.NewBreaker(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				switch s.op {
				case ok, fail:
					b.Record("sim-a", s.op == ok, now)
				case allow, deny:
					if got := b.Allow("sim-a", now); got != (s.op == allow) {
						t.Fatalf("step %d (%v at %v): Allow = %v", i, s.op, s.at, got)
					}
				}
				if got := b.State("sim-a", now); got != s.want {
					t.Fatalf("step %d (%v at %v): state %v, want %v", i, s.op, s.at, got, s.want)
				}
			}
		})
	}
}

func withProbes(n int) routing.BreakerConfig {
	c := testBreakerConfig
	c.HalfOpenProbes = n
	return c
}

func TestBreakerKeepsProvidersApart(t *testing.T) {
	b, err := routing.NewBreaker(testBreakerConfig)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		b.Record("sim-a", false, t0)
		b.Record("sim-b", true, t0)
	}
	want := map[string]routing.State{"sim-a": open, "sim-b": closed}
	got := b.Snapshot(t0)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Snapshot = %v, want %v", got, want)
	}
	if s := b.State("never-seen", t0); s != closed {
		t.Errorf("unknown provider is %v, want closed", s)
	}
	if !b.Allow("never-seen", t0) {
		t.Error("unknown provider is refused")
	}
	if got := b.Snapshot(t0.Add(5 * time.Second)); got["sim-a"] != halfOpen {
		t.Errorf("Snapshot after the cooldown = %v, want sim-a half-open", got)
	}
}

// TestBreakerHealth checks the view Choose gets: a half-open provider with no
// probe slot left must look open, or Choose would pick a provider Allow
// refuses.
func TestBreakerHealth(t *testing.T) {
	b, err := routing.NewBreaker(testBreakerConfig)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 {
		b.Record("sim-a", false, t0)
	}
	at := t0.Add(5 * time.Second)
	steps := []struct {
		do   func()
		want routing.State
	}{
		{func() {}, halfOpen},
		{func() { b.Allow("sim-a", at) }, open},
		{func() { b.Record("sim-a", true, at) }, closed},
	}
	for i, s := range steps {
		s.do()
		if got := b.Health(at)("sim-a"); got != s.want {
			t.Errorf("step %d: Health = %v, want %v", i, got, s.want)
		}
	}
	if got := b.Health(at)("never-seen"); got != closed {
		t.Errorf("Health of an unknown provider = %v, want closed", got)
	}
}

// TestBreakerForgetsOutsideTheWindow runs a day of outcomes through the
// ring of buckets, wrapping it thousands of times. A window that forgot
// nothing would still see 40% failures at the end and stay closed; one that
// forgot too much would never reach MinSamples.
func TestBreakerForgetsOutsideTheWindow(t *testing.T) {
	b, err := routing.NewBreaker(routing.BreakerConfig{Window: time.Minute, MinSamples: 50, FailureRatio: 0.5, Cooldown: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	now := t0
	// A day at one outcome per second, 40% failures: the window holds more
	// than MinSamples, so the ratio is judged, and never opens.
	for i := range 86_400 {
		now = t0.Add(time.Duration(i) * time.Second)
		b.Record("sim-a", i%5 >= 2, now) // ok 3 in 5
		if s := b.State("sim-a", now); s != closed {
			t.Fatalf("opened after %d outcomes at 40%% failures", i+1)
		}
	}
	for i := range 60 {
		b.Record("sim-a", false, now.Add(time.Duration(i+1)*time.Second))
	}
	if s := b.State("sim-a", now.Add(60*time.Second)); s != open {
		t.Errorf("state %v after a window of failures, want open", s)
	}
}

func TestNewBreakerConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     routing.BreakerConfig
		wantErr string
	}{
		{"zero takes defaults", routing.BreakerConfig{}, ""},
		{"defaults", routing.DefaultBreakerConfig(), ""},
		{"negative window", routing.BreakerConfig{Window: -1}, "window"},
		{"negative min samples", routing.BreakerConfig{MinSamples: -1}, "min samples"},
		{"ratio above one", routing.BreakerConfig{FailureRatio: 1.5}, "failure ratio"},
		{"negative ratio", routing.BreakerConfig{FailureRatio: -0.1}, "failure ratio"},
		{"NaN ratio", routing.BreakerConfig{FailureRatio: math.NaN()}, "failure ratio"},
		{"negative cooldown", routing.BreakerConfig{Cooldown: -time.Second}, "cooldown"},
		{"negative probes", routing.BreakerConfig{HalfOpenProbes: -1}, "probes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := routing.NewBreaker(tt.cfg)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.wantErr == "" && b == nil:
				t.Fatal("nil breaker")
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("error %v, want one about %q", err, tt.wantErr)
			}
		})
	}
}

// TestBreakerZeroConfigUsesDefaults checks the defaults are really applied: a
// zero MinSamples would otherwise open the circuit on the first failure.
func TestBreakerZeroConfigUsesDefaults(t *testing.T) {
	b, err := routing.NewBreaker(routing.BreakerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	def := routing.DefaultBreakerConfig()
	for i := range def.MinSamples {
		if s := b.State("sim-a", t0); s != closed {
			t.Fatalf("open after %d failures, want the default MinSamples %d", i, def.MinSamples)
		}
		b.Record("sim-a", false, t0)
	}
	if s := b.State("sim-a", t0); s != open {
		t.Errorf("state %v after MinSamples failures, want open", s)
	}
	if s := b.State("sim-a", t0.Add(def.Cooldown)); s != halfOpen {
		t.Errorf("state %v after the default cooldown, want half-open", s)
	}
}

func TestStateString(t *testing.T) {
	for s, want := range map[routing.State]string{closed: "closed", open: "open", halfOpen: "half-open", 7: "State(7)"} {
		if got := s.String(); got != want {
			t.Errorf("%d.String() = %q, want %q", int(s), got, want)
		}
		if got, _ := s.MarshalText(); string(got) != want {
			t.Errorf("%d.MarshalText() = %q, want %q", int(s), got, want)
		}
	}
}
