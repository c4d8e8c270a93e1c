package routing

import (
	"errors"
	"fmt"
	"time"
)

// State is the condition of a provider's circuit. The zero value is Closed,
// so a health function that knows nothing about a provider lets it through.
type State int

// The circuit states.
const (
	Closed   State = iota // calls flow; outcomes are counted
	Open                  // calls are refused until the cooldown has passed
	HalfOpen              // a few probe calls test whether the provider recovered
)

// String returns the lower-case name used in logs, metrics and support views.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case Open:
		return "open"
	case HalfOpen:
		return "half-open"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText lets snapshots render states by name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// windowBuckets is how many slices the sliding window is cut into. Outcomes
// age out one slice at a time, so the window is exact to Window/windowBuckets;
// ten keeps that coarse error at 10% while memory per provider stays fixed.
const windowBuckets = 10

// BreakerConfig tunes the circuit breaker. A zero field takes its value from
// DefaultBreakerConfig.
type BreakerConfig struct {
	// Window is the sliding period over which outcomes are counted.
	Window time.Duration
	// MinSamples is how many outcomes the window must hold before the
	// failure ratio is trusted; below it a few early failures cannot open the
	// circuit of a quiet provider.
	MinSamples int
	// FailureRatio in (0, 1] opens the circuit when failures/outcomes reaches it.
	FailureRatio float64
	// Cooldown is how long an open circuit refuses calls before probing. It
	// also bounds how long a probe may stay unanswered before its slot is
	// given back (see Allow).
	Cooldown time.Duration
	// HalfOpenProbes is how many probe calls may be in flight at once while
	// half-open.
	HalfOpenProbes int
}

// DefaultBreakerConfig returns settings suited to an SMS provider: half of at
// least 20 submissions failing within 30 s opens the circuit, and after 15 s
// one probe at a time tests the provider again.
func DefaultBreakerConfig() BreakerConfig {
	return BreakerConfig{
		Window:         30 * time.Second,
		MinSamples:     20,
		FailureRatio:   0.5,
		Cooldown:       15 * time.Second,
		HalfOpenProbes: 1,
	}
}

// Breaker tracks a circuit per provider from the outcomes of calls to it.
//
// A Breaker is NOT safe for concurrent use: it is plain state without locks
// or goroutines, and the caller (e.g. the dispatch worker that owns it)
// serializes calls. Time is always passed in. Memory is fixed per provider
// (a ring of counters, not a list of outcomes), and providers are the ones
// named in the route table, so the whole Breaker stays small.
type Breaker struct {
	cfg      BreakerConfig
	width    int64 // bucket width in nanoseconds
	circuits map[string]*circuit
}

type circuit struct {
	state    State     // Closed, Open or HalfOpen as last stored; Open may have lazily become HalfOpen
	openedAt time.Time // when the circuit last opened
	probes   int       // probes allowed while half-open whose outcome has not arrived
	probedAt time.Time // when the last probe was allowed
	buckets  [windowBuckets]bucket
}

// bucket counts the outcomes of one slice of the window. epoch numbers the
// slice since the Unix epoch, so a stale bucket is recognized and reused.
type bucket struct {
	epoch    int64
	ok, fail int
}

// NewBreaker returns a Breaker with every circuit closed. Zero fields of cfg
// take their defaults; out-of-range values are an error.
func NewBreaker(cfg BreakerConfig) (*Breaker, error) {
	def := DefaultBreakerConfig()
	if cfg.Window == 0 {
		cfg.Window = def.Window
	}
	if cfg.MinSamples == 0 {
		cfg.MinSamples = def.MinSamples
	}
	if cfg.FailureRatio == 0 {
		cfg.FailureRatio = def.FailureRatio
	}
	if cfg.Cooldown == 0 {
		cfg.Cooldown = def.Cooldown
	}
	if cfg.HalfOpenProbes == 0 {
		cfg.HalfOpenProbes = def.HalfOpenProbes
	}
	var errs []error
	if cfg.Window < 0 {
		errs = append(errs, fmt.Errorf("window must be positive, got %v", cfg.Window))
	}
	if cfg.MinSamples < 0 {
		errs = append(errs, fmt.Errorf("min samples must be positive, got %d", cfg.MinSamples))
	}
	if !(cfg.FailureRatio > 0 && cfg.FailureRatio <= 1) { // written so NaN fails too
		errs = append(errs, fmt.Errorf("failure ratio must be in (0, 1], got %v", cfg.FailureRatio))
	}
	if cfg.Cooldown < 0 {
		errs = append(errs, fmt.Errorf("cooldown must be positive, got %v", cfg.Cooldown))
	}
	if cfg.HalfOpenProbes < 0 {
		errs = append(errs, fmt.Errorf("half-open probes must be positive, got %d", cfg.HalfOpenProbes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("routing: breaker config: %w", err)
	}
	return &Breaker{
		cfg:      cfg,
		width:    max(1, int64(cfg.Window)/windowBuckets),
		circuits: make(map[string]*circuit),
	}, nil
}

// Record counts the outcome of a call to provider that finished at now.
//
// Only outcomes that say something about the provider's health belong here:
// a submission rejected because the number is invalid is ok=true for the
// breaker, or invalid numbers would take a healthy provider out of service.
//
// Outcomes arriving while the circuit is open are ignored: they belong to
// calls started before it opened and say nothing new. While half-open, any
// outcome is taken as a probe's: a success closes the circuit with a fresh
// window, a failure opens it again for another Cooldown. Without call tokens a
// late outcome of a pre-open call cannot be told from a probe's; the cost is
// at most one early close or re-open, which the window corrects.
func (b *Breaker) Record(provider string, ok bool, now time.Time) {
	c := b.circuits[provider]
	if c == nil {
		c = &circuit{}
		b.circuits[provider] = c
	}
	switch b.advance(c, now) {
	case Open:
		return
	case HalfOpen:
		if ok {
			*c = circuit{state: Closed}
		} else {
			*c = circuit{state: Open, openedAt: now}
		}
		return
	}

	e := floorDiv(now.UnixNano(), b.width)
	bk := &c.buckets[mod(e, windowBuckets)]
	switch {
	case bk.ok+bk.fail == 0 || e > bk.epoch:
		*bk = bucket{epoch: e} // unused, or a slice that has left the window
	case e < bk.epoch:
		return // the clock went back past the window this slot now holds
	}
	if ok {
		bk.ok++
	} else {
		bk.fail++
	}

	oks, fails := c.counts(e)
	total := oks + fails
	if total >= b.cfg.MinSamples && float64(fails) >= b.cfg.FailureRatio*float64(total) {
		*c = circuit{state: Open, openedAt: now}
	}
}

// State reports provider's circuit at now without changing anything, so
// metrics and support views can call it freely.
func (b *Breaker) State(provider string, now time.Time) State {
	c := b.circuits[provider]
	if c == nil {
		return Closed
	}
	return b.current(c, now)
}

// Allow says whether a call to provider may start at now and, while
// half-open, takes one of the HalfOpenProbes probe slots for it; the slot is
// given back by the Record of its outcome. A probe whose outcome never comes
// (its worker crashed) would hold its slot forever and wedge the circuit, so
// slots are given back once Cooldown has passed since the last probe started.
func (b *Breaker) Allow(provider string, now time.Time) bool {
	c := b.circuits[provider]
	if c == nil {
		return true
	}
	switch b.advance(c, now) {
	case Closed:
		return true
	case HalfOpen:
		if c.probes >= b.cfg.HalfOpenProbes {
			return false
		}
		c.probes++
		c.probedAt = now
		return true
	}
	return false
}

// Health returns the health function Choose takes, as seen at now. A
// half-open provider whose probe slots are all taken is reported Open, so
// Choose fails over instead of picking a provider Allow would refuse. It
// reads only; call Allow for the chosen provider to take its probe slot.
func (b *Breaker) Health(now time.Time) func(provider string) State {
	return func(provider string) State {
		c := b.circuits[provider]
		if c == nil {
			return Closed
		}
		s := b.current(c, now)
		if s == HalfOpen && b.probesInFlight(c, now) >= b.cfg.HalfOpenProbes {
			return Open
		}
		return s
	}
}

// Snapshot returns every known provider's state at now, for metrics and
// support. Providers never recorded are closed and absent.
func (b *Breaker) Snapshot(now time.Time) map[string]State {
	m := make(map[string]State, len(b.circuits))
	for p, c := range b.circuits {
		m[p] = b.current(c, now)
	}
	return m
}

// current derives the state at now: an open circuit whose cooldown has passed
// is half-open even before anything stores that.
func (b *Breaker) current(c *circuit, now time.Time) State {
	if c.state == Open && now.Sub(c.openedAt) >= b.cfg.Cooldown {
		return HalfOpen
	}
	return c.state
}

// advance stores the state current derives and forgets lost probes, before
// Record or Allow act on the circuit.
func (b *Breaker) advance(c *circuit, now time.Time) State {
	s := b.current(c, now)
	if s == HalfOpen && c.state == Open {
		c.state, c.probes = HalfOpen, 0
	}
	c.probes = b.probesInFlight(c, now)
	return s
}

func (b *Breaker) probesInFlight(c *circuit, now time.Time) int {
	if c.state != HalfOpen || now.Sub(c.probedAt) >= b.cfg.Cooldown {
		return 0
	}
	return c.probes
}

// counts sums the buckets inside the window that ends with epoch e.
func (c *circuit) counts(e int64) (oks, fails int) {
	for _, bk := range c.buckets {
		if bk.epoch > e-windowBuckets && bk.epoch <= e {
			oks += bk.ok
			fails += bk.fail
		}
	}
	return oks, fails
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

func mod(a, n int64) int64 {
	m := a % n
	if m < 0 {
		m += n
	}
	return m
}
