package receipts

import "github.com/prometheus/client_golang/prometheus"

// metrics are the intake's Prometheus series. Labels are bounded: provider
// names come from the configuration (a request for an unconfigured one is
// counted as "unknown"), dispositions and reasons from the fixed lists in
// decide.go, refusal reasons from provider.SignatureProblem and a few more.
type metrics struct {
	receipts *prometheus.CounterVec
	unparked *prometheus.CounterVec
	refused  *prometheus.CounterVec
	// itemsRefused counts single receipts refused within a callback whose
	// other receipts were settled.
	itemsRefused *prometheus.CounterVec
	conflicts    prometheus.Counter
	parked       prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		receipts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_receipts_total",
			Help: "Delivery receipts received, by provider and the disposition they got on arrival."},
			[]string{"provider", "disposition", "reason"}),
		unparked: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_receipts_unparked_total",
			Help: "Parked receipts resolved after their message's submission (or final state) was recorded."},
			[]string{"provider", "disposition", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_receipt_requests_refused_total",
			Help: "Receipt callbacks refused before any receipt was looked at, by provider and reason."},
			[]string{"provider", "reason"}),
		itemsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_receipts_refused_total",
			Help: "Single receipts refused (and recorded in receipt_refusals) while the rest of their callback was settled, by provider and code."},
			[]string{"provider", "code"}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_receipt_conflicts_total",
			Help: "Receipt batches decided again because a message stream moved while they were decided."}),
		parked: prometheus.NewGauge(prometheus.GaugeOpts{Name: "afterok_receipts_parked",
			Help: "Receipts waiting for their message's submission, in the whole database (refreshed by the sweeper)."}),
	}
	reg.MustRegister(m.receipts, m.unparked, m.refused, m.itemsRefused, m.conflicts, m.parked)
	return m
}

// settled counts a committed settlement.
func (m *metrics) settled(s *settlement) {
	for _, e := range s.incoming {
		m.receipts.WithLabelValues(e.receipt.Provider, string(e.disposition), string(e.reason)).Inc()
	}
	for _, e := range s.unparked {
		if e.disposition != Parked {
			m.unparked.WithLabelValues(e.receipt.Provider, string(e.disposition), string(e.reason)).Inc()
		}
	}
}
