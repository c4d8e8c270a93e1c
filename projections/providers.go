package projections

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/afterok/afterok/eventstore"
)

// ProviderStats is what one provider did over a range of hours.
type ProviderStats struct {
	Provider                              string
	Submitted, Delivered, Failed, Retried int64
	// SubmitLatency is the provider's answer time to a submission;
	// DeliveryLatency the time from submission to the delivery receipt.
	SubmitLatency, DeliveryLatency Latency
	Failures                       []FailureCount
}

// Latency summarises a latency histogram. Percentiles are the upper bound
// of the bucket they fall in, in milliseconds; -1 means beyond the last
// bound (60 s).
type Latency struct {
	Count          int64
	MeanMillis     float64
	P50, P95, P99  int64
	histogramTotal histogram
}

// FailureCount is how often a provider failed with one code at one stage.
// Permanent failures ended the message; the others were retried.
type FailureCount struct {
	Code      string
	Stage     string
	Permanent bool
	Count     int64
}

const (
	providerStatsSQL = `SELECT provider, submitted, delivered, failed, retried,
    submit_ms_sum, submit_ms_count, submit_ms_buckets, deliver_ms_sum, deliver_ms_count, deliver_ms_buckets
FROM read_provider_stats WHERE hour >= $1 AND hour < $2`

	providerFailuresSQL = `SELECT provider, code, stage, permanent, sum(count)::bigint
FROM read_provider_failures WHERE hour >= $1 AND hour < $2
GROUP BY provider, code, stage, permanent ORDER BY provider, sum(count) DESC, code, stage, permanent`
)

// GetProviderStats sums the hourly statistics of every provider over
// [since, until). The resolution is the hour: since is rounded down to one.
func GetProviderStats(ctx context.Context, q eventstore.Querier, since, until time.Time) ([]ProviderStats, error) {
	since = since.UTC().Truncate(time.Hour)
	rows, err := q.Query(ctx, providerStatsSQL, since, until)
	if err != nil {
		return nil, fmt.Errorf("provider stats: %w", err)
	}
	byProvider := map[string]*ProviderStats{}
	get := func(p string) *ProviderStats {
		s := byProvider[p]
		if s == nil {
			s = &ProviderStats{Provider: p}
			byProvider[p] = s
		}
		return s
	}
	for rows.Next() {
		var p string
		var sub, del, fail, ret int64
		var submit, deliver histogram
		var sb, db []int64
		if err := rows.Scan(&p, &sub, &del, &fail, &ret, &submit.Sum, &submit.Count, &sb, &deliver.Sum, &deliver.Count, &db); err != nil {
			rows.Close()
			return nil, err
		}
		copy(submit.Buckets[:], sb)
		copy(deliver.Buckets[:], db)
		s := get(p)
		s.Submitted += sub
		s.Delivered += del
		s.Failed += fail
		s.Retried += ret
		s.SubmitLatency.histogramTotal.merge(submit)
		s.DeliveryLatency.histogramTotal.merge(deliver)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows, err = q.Query(ctx, providerFailuresSQL, since, until)
	if err != nil {
		return nil, fmt.Errorf("provider failures: %w", err)
	}
	for rows.Next() {
		var p string
		var f FailureCount
		if err := rows.Scan(&p, &f.Code, &f.Stage, &f.Permanent, &f.Count); err != nil {
			rows.Close()
			return nil, err
		}
		s := get(p)
		s.Failures = append(s.Failures, f)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]ProviderStats, 0, len(byProvider))
	for _, s := range byProvider {
		s.SubmitLatency.summarise()
		s.DeliveryLatency.summarise()
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Provider < out[j].Provider })
	return out, nil
}

func (l *Latency) summarise() {
	h := &l.histogramTotal
	l.Count = h.Count
	if h.Count > 0 {
		l.MeanMillis = float64(h.Sum) / float64(h.Count)
	}
	l.P50, l.P95, l.P99 = h.Quantile(0.50), h.Quantile(0.95), h.Quantile(0.99)
}
