package eventstore

import "github.com/prometheus/client_golang/prometheus"

// ConsumerMetrics are the partitioned consumers' series, labelled by
// consumer name only (a handful of values).
type ConsumerMetrics struct {
	ownedGauge *prometheus.GaugeVec
	takeovers  *prometheus.CounterVec
	tailReads  *prometheus.CounterVec
}

// NewConsumerMetrics registers afterok_consumer_partitions_owned and
// afterok_consumer_lease_takeovers_total with reg.
func NewConsumerMetrics(reg prometheus.Registerer) *ConsumerMetrics {
	m := &ConsumerMetrics{
		ownedGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "afterok_consumer_partitions_owned",
			Help: "Partitions of each tail consumer this process holds the lease of."}, []string{"consumer"}),
		takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_consumer_lease_takeovers_total",
			Help: "Partitions this process took over from an owner whose lease had expired (a dead or stalled process)."},
			[]string{"consumer"}),
		tailReads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_tail_reads_total",
			Help: "Tail reads of this process's consumers by where they were answered: window (the shared window in memory), " +
				"shared (a fill another consumer had just made), fill (one read of the database that extended the window), " +
				"behind (a cursor older than the window: read from the database alone)."},
			[]string{"source"}),
	}
	reg.MustRegister(m.ownedGauge, m.takeovers, m.tailReads)
	return m
}

// owned moves the gauge by delta (several Runs of one consumer in a
// process add up).
func (m *ConsumerMetrics) owned(consumer string, delta int) {
	if m != nil && delta != 0 {
		m.ownedGauge.WithLabelValues(consumer).Add(float64(delta))
	}
}

func (m *ConsumerMetrics) tailRead(source string) {
	if m != nil {
		m.tailReads.WithLabelValues(source).Inc()
	}
}

func (m *ConsumerMetrics) takeover(consumer string) {
	if m != nil {
		m.takeovers.WithLabelValues(consumer).Inc()
	}
}
