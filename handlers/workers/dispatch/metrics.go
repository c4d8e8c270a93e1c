package dispatch

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	submitted     prometheus.Counter
	failures      *prometheus.CounterVec
	submitSeconds *prometheus.HistogramVec
	batchSeconds  prometheus.Histogram
	batchErrors   prometheus.Counter
	deadLettered  prometheus.Counter
	outageHolds   prometheus.Counter
	// conflictReruns counts batches run again at once because another
	// writer (a cancel, most often) moved one of their messages on.
	conflictReruns prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		submitted: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_dispatch_submitted_total",
			Help: "Attempts a provider accepted."}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_dispatch_submit_failures_total",
			Help: "Failed submissions by provider and normalized code."}, []string{"provider", "code"}),
		submitSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "afterok_dispatch_submit_seconds",
			Help: "Latency of one batch submission to a provider.", Buckets: prometheus.DefBuckets}, []string{"provider"}),
		batchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "afterok_dispatch_batch_seconds",
			Help: "Time to process one fetched batch of jobs.", Buckets: prometheus.DefBuckets}),
		batchErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_dispatch_batch_errors_total",
			Help: "Batches that failed and were left to redelivery."}),
		deadLettered: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_dispatch_dead_lettered_total",
			Help: "Jobs that reached MaxDeliver and were failed as dead-lettered."}),
		outageHolds: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_dispatch_outage_holds_total",
			Help: "Batches held (not redelivered) because the store was unreachable."}),
		conflictReruns: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_dispatch_conflict_reruns_total",
			Help: "Batches run again from the store because another writer (a cancel, the expirer) moved one of their messages on."}),
	}
	if reg != nil {
		reg.MustRegister(m.submitted, m.failures, m.submitSeconds, m.batchSeconds, m.batchErrors, m.deadLettered, m.outageHolds, m.conflictReruns)
	}
	return m
}
