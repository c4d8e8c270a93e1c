package projections

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// The outcome metrics: how messages end and how long they take, counted
// by the messages projector as it applies their final event (after its
// commit, so a retried batch is not counted twice; a rebuild does not count
// again), and how many messages are in each public state, read from the
// read model.

// finished is a message that reached a final state in a batch.
type finished struct {
	outcome string // "delivered" or "failed"
	code    string // the failure code, bounded by failureCodeLabel
	took    time.Duration
}

// finish records m, which the batch just made final.
func (r *result) finish(m *domain.Message) {
	f := finished{outcome: string(m.State)}
	switch m.State {
	case domain.StateDelivered:
		f.took = m.DeliveredAt.Sub(m.AcceptedAt)
	case domain.StateFailed:
		f.took = m.FailedAt.Sub(m.AcceptedAt)
		if m.Failure != nil {
			f.code = failureCodeLabel(m.Failure.Code)
		}
	default:
		return
	}
	r.finished = append(r.finished, f)
}

// failureCodes are the normalized codes (domain/failure.go); anything else
// is labelled "other", so the label set stays bounded whatever a provider
// adapter lets through.
var failureCodes = map[string]bool{domain.CodeInvalidDestination: true, domain.CodeUndeliverable: true,
	domain.CodeRejected: true, domain.CodeProviderUnavailable: true, domain.CodeTimeout: true, domain.CodeThrottled: true,
	domain.CodeDeliveryDelayed: true, domain.CodeNoRoute: true, domain.CodeRoutesExhausted: true,
	domain.CodeAttemptsExhausted: true, domain.CodeExpired: true, domain.CodeDeadLettered: true}

func failureCodeLabel(code string) string {
	if failureCodes[code] {
		return code
	}
	return "other"
}

type outcomeMetrics struct {
	endToEnd  *prometheus.HistogramVec
	delivered prometheus.Counter
	failed    *prometheus.CounterVec
}

func newOutcomeMetrics() *outcomeMetrics {
	return &outcomeMetrics{
		endToEnd: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "afterok_message_end_to_end_seconds",
			Help:    "Per message, from MessageAccepted to its final event (event times), by outcome.",
			Buckets: []float64{.1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}}, []string{"outcome"}),
		delivered: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_messages_delivered_total",
			Help: "Messages that reached delivered, as the projector applied it."}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_messages_failed_total",
			Help: "Messages that reached failed, by failure code, as the projector applied it."}, []string{"code"}),
	}
}

func (m *outcomeMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.endToEnd, m.delivered, m.failed}
}

func (m *outcomeMetrics) observe(fs []finished) {
	for _, f := range fs {
		m.endToEnd.WithLabelValues(f.outcome).Observe(max(f.took, 0).Seconds())
		if f.outcome == string(domain.StateDelivered) {
			m.delivered.Inc()
		} else {
			m.failed.WithLabelValues(f.code).Inc()
		}
	}
}

// publicStates are the states afterok_messages reports, in the order of
// messageStatesSQL's columns.
var publicStates = []string{"scheduled", "accepted", "queued", "routed", "submitted", "delivered", "failed", "canceled"}

// messageStatesSQL sums the orders' counts rather than counting messages:
// one row per order, not per message.
const messageStatesSQL = `-- name: metrics.message_states
SELECT coalesce(sum(count_scheduled), 0)::bigint, coalesce(sum(count_accepted), 0)::bigint,
    coalesce(sum(count_queued), 0)::bigint, coalesce(sum(count_routed), 0)::bigint,
    coalesce(sum(count_submitted), 0)::bigint, coalesce(sum(count_delivered), 0)::bigint,
    coalesce(sum(count_failed), 0)::bigint, coalesce(sum(count_canceled), 0)::bigint
FROM read_orders`

// stateGauge is afterok_messages{state}: the read model's count of
// messages in each public state. It queries at scrape time, at most once
// per maxAge (a scrape of every process, every few seconds, must not
// become a table scan each), and keeps the last good figures if a query
// fails.
type stateGauge struct {
	q      eventstore.Querier
	log    *slog.Logger
	desc   *prometheus.Desc
	maxAge time.Duration

	mu     sync.Mutex
	at     time.Time
	counts []int64
}

func newStateGauge(q eventstore.Querier, log *slog.Logger, maxAge time.Duration) *stateGauge {
	return &stateGauge{q: q, log: log, maxAge: maxAge,
		desc: prometheus.NewDesc("afterok_messages", "Messages in each public state, from the read model "+
			"(every process running the projector reports the same figure: aggregate with max).", []string{"state"}, nil)}
}

// Describe implements prometheus.Collector.
func (g *stateGauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.desc }

// Collect implements prometheus.Collector.
func (g *stateGauge) Collect(ch chan<- prometheus.Metric) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if time.Since(g.at) >= g.maxAge {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		counts := make([]int64, len(publicStates))
		dst := make([]any, len(counts))
		for i := range counts {
			dst[i] = &counts[i]
		}
		rows, err := g.q.Query(ctx, messageStatesSQL)
		if err == nil {
			if rows.Next() {
				err = rows.Scan(dst...)
			}
			rows.Close()
			if err == nil {
				err = rows.Err()
			}
		}
		cancel()
		if err != nil {
			g.log.Warn("message state gauge: query failed; reporting the last figures", "err", err)
		} else {
			g.counts, g.at = counts, time.Now()
		}
	}
	for i, n := range g.counts {
		ch <- prometheus.MustNewConstMetric(g.desc, prometheus.GaugeValue, float64(n), publicStates[i])
	}
}
