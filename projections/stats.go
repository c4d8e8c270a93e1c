package projections

import (
	"strconv"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
)

// latencyBoundsMillis are the upper bounds (inclusive) of the latency
// histograms' buckets; one more bucket takes everything slower. Written
// here once, only read.
var latencyBoundsMillis = [...]int64{50, 100, 250, 500, 1000, 2500, 5000, 10_000, 30_000, 60_000}

// numBuckets is the histograms' length: one per bound plus the overflow.
const numBuckets = len(latencyBoundsMillis) + 1

// histogram is a fixed-bucket latency histogram in milliseconds.
type histogram struct {
	Sum, Count int64
	Buckets    [numBuckets]int64
}

func (h *histogram) observe(ms int64) {
	ms = max(ms, 0)
	i := 0
	for i < len(latencyBoundsMillis) && ms > latencyBoundsMillis[i] {
		i++
	}
	h.Buckets[i]++
	h.Sum += ms
	h.Count++
}

func (h *histogram) merge(o histogram) {
	h.Sum += o.Sum
	h.Count += o.Count
	for i := range h.Buckets {
		h.Buckets[i] += o.Buckets[i]
	}
}

// Quantile returns the upper bound of the bucket holding quantile q, in
// milliseconds (-1 for the overflow bucket, 0 when empty): an upper bound,
// which is what a histogram can honestly say.
func (h *histogram) Quantile(q float64) int64 {
	if h.Count == 0 {
		return 0
	}
	rank := int64(q*float64(h.Count) + 0.5)
	rank = max(rank, 1)
	var seen int64
	for i, n := range h.Buckets {
		seen += n
		if seen >= rank {
			if i < len(latencyBoundsMillis) {
				return latencyBoundsMillis[i]
			}
			return -1
		}
	}
	return -1
}

// pgArray renders the buckets as a bigint[] literal.
func (h *histogram) pgArray() string {
	parts := make([]string, len(h.Buckets))
	for i, n := range h.Buckets {
		parts[i] = strconv.FormatInt(n, 10)
	}
	return "{" + strings.Join(parts, ",") + "}"
}

type providerHour struct {
	hour     time.Time
	provider string
}

type providerCounts struct {
	submitted, delivered, failed, retried int64
	submit, deliver                       histogram
}

type failureKey struct {
	providerHour
	code, stage string
	permanent   bool
}

// statsDelta accumulates what one batch adds to the provider statistics.
type statsDelta struct {
	counts   map[providerHour]*providerCounts
	failures map[failureKey]int64
}

func newStatsDelta() *statsDelta {
	return &statsDelta{counts: map[providerHour]*providerCounts{}, failures: map[failureKey]int64{}}
}

func (d *statsDelta) at(provider string, t time.Time) *providerCounts {
	k := providerHour{hour: t.UTC().Truncate(time.Hour), provider: provider}
	c := d.counts[k]
	if c == nil {
		c = &providerCounts{}
		d.counts[k] = c
	}
	return c
}

// observe counts one folded event: prev is the message before it. A
// failure is attributed to the provider it names, else to the provider of
// the attempt it ends; a failure before any provider (no route) counts for
// none.
func (d *statsDelta) observe(prev *domain.Message, ev domain.Event) {
	switch e := ev.(type) {
	case domain.MessageSubmitted:
		if p := or(e.Provider, prev.Provider); p != "" {
			c := d.at(p, e.At)
			c.submitted++
			c.submit.observe(e.LatencyMillis)
		}
	case domain.MessageDelivered:
		if p := or(e.Provider, prev.Provider); p != "" {
			c := d.at(p, e.At)
			c.delivered++
			if !prev.SubmittedAt.IsZero() {
				c.deliver.observe(elapsedMillis(prev.SubmittedAt, e.At))
			}
		}
	case domain.MessageFailed:
		if p := or(e.Failure.Provider, prev.Provider); p != "" {
			d.at(p, e.At).failed++
			d.failure(p, e.At, e.Failure, true)
		}
	case domain.MessageRetried:
		if p := or(e.Failure.Provider, prev.Provider); p != "" {
			d.at(p, e.At).retried++
			d.failure(p, e.At, e.Failure, false)
		}
	}
}

func (d *statsDelta) failure(provider string, at time.Time, f domain.Failure, permanent bool) {
	k := failureKey{providerHour: providerHour{hour: at.UTC().Truncate(time.Hour), provider: provider},
		code: f.Code, stage: string(f.Stage), permanent: permanent}
	d.failures[k]++
}

// elapsedMillis is the time between two event times in whole
// milliseconds, both taken as PostgreSQL stores them (stored: UTC,
// microseconds). The projector folds onto a row it read back from the
// database, verify folds the events afresh with their nanoseconds; a
// latency computed from one of each would land on either side of a
// millisecond. One rounding rule, applied to both ends, makes the two
// agree.
func elapsedMillis(from, to time.Time) int64 {
	return stored(to).Sub(stored(from)).Milliseconds()
}

func or(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
