package api

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the API's Prometheus series. Labels are bounded: route
// patterns (not paths), methods, status codes and problem codes, never an
// id.
type metrics struct {
	requests   *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	rejections *prometheus.CounterVec
	orders     prometheus.Counter
	messages   prometheus.Counter
	replays    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_http_requests_total",
			Help: "HTTP requests by route pattern, method and status."}, []string{"route", "method", "status"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "afterok_http_request_duration_seconds",
			Help: "HTTP request latency by route pattern and method.", Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}},
			[]string{"route", "method"}),
		rejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_api_rejections_total",
			Help: "Requests answered with a problem document, by code."}, []string{"code"}),
		orders:   prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_orders_accepted_total", Help: "Orders accepted."}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_messages_accepted_total", Help: "Messages accepted."}),
		replays: prometheus.NewCounter(prometheus.CounterOpts{Name: "afterok_idempotent_replays_total",
			Help: "Orders answered from an Idempotency-Key record."}),
	}
	reg.MustRegister(m.requests, m.duration, m.rejections, m.orders, m.messages, m.replays)
	return m
}

func (m *metrics) observe(route, method string, status int, d time.Duration) {
	m.requests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	if d > 0 {
		m.duration.WithLabelValues(route, method).Observe(d.Seconds())
	}
}

func (m *metrics) rejection(code string) { m.rejections.WithLabelValues(code).Inc() }

func stringify(v any) string { return fmt.Sprint(v) }
