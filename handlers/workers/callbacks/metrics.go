package callbacks

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	owed          prometheus.Counter
	deliveries    *prometheus.CounterVec
	duration      prometheus.Histogram
	lag           prometheus.Histogram
	disabled      *prometheus.CounterVec
	breakerOpened prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		owed: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_webhook_deliveries_owed_total",
			Help: "Deliveries the fan-out owed to endpoints (event × subscribed endpoint)."}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_webhook_attempts_total",
			Help: "Delivery attempts by outcome: succeeded, failed (retried), exhausted."}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "afterok_webhook_attempt_duration_seconds",
			Help: "Time from sending a callback to its answer (or error).", Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12)}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "afterok_webhook_callback_lag_seconds",
			Help: "Time from an event's recording to the receiver's successful answer.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}),
		disabled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_webhook_endpoints_disabled_total",
			Help: "Endpoints disabled by the deliverer: gone (410) or failing (every attempt failed for AFTEROK_WEBHOOK_DISABLE_AFTER)."}, []string{"reason"}),
		breakerOpened: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_webhook_breaker_opened_total",
			Help: "Times an endpoint's circuit breaker opened."}),
	}
	if reg != nil {
		reg.MustRegister(m.owed, m.deliveries, m.duration, m.lag, m.disabled, m.breakerOpened)
	}
	return m
}
