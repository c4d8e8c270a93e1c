package eventstore

import (
	"context"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// QueryMetrics times every statement of a pool by the statement's name
// (StatementName), so that "where does the database time go" has an answer
// under load. The label set is bounded: names, never SQL text.
type QueryMetrics struct {
	seconds *prometheus.HistogramVec
}

// NewQueryMetrics registers afterok_db_query_seconds with reg.
func NewQueryMetrics(reg prometheus.Registerer) *QueryMetrics {
	m := &QueryMetrics{seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "afterok_db_query_seconds", Help: "PostgreSQL statement latency by statement name (a leading -- name: comment, else verb:table).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5},
	}, []string{"statement"})}
	reg.MustRegister(m.seconds)
	return m
}

type queryStart struct{}

type started struct {
	at  time.Time
	sql string
}

// TraceQueryStart implements pgx.QueryTracer.
func (m *QueryMetrics) TraceQueryStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceQueryStartData) context.Context {
	return context.WithValue(ctx, queryStart{}, started{at: time.Now(), sql: d.SQL})
}

// TraceQueryEnd implements pgx.QueryTracer.
func (m *QueryMetrics) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceQueryEndData) {
	if s, ok := ctx.Value(queryStart{}).(started); ok {
		m.seconds.WithLabelValues(StatementName(s.sql)).Observe(time.Since(s.at).Seconds())
	}
}

// TraceCopyFromStart implements pgx.CopyFromTracer.
func (m *QueryMetrics) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, d pgx.TraceCopyFromStartData) context.Context {
	return context.WithValue(ctx, queryStart{}, started{at: time.Now(), sql: "-- name: copy:" + strings.Join(d.TableName, ".")})
}

// TraceCopyFromEnd implements pgx.CopyFromTracer.
func (m *QueryMetrics) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, _ pgx.TraceCopyFromEndData) {
	if s, ok := ctx.Value(queryStart{}).(started); ok {
		m.seconds.WithLabelValues(s.sql).Observe(time.Since(s.at).Seconds())
	}
}

// TraceBatchStart implements pgx.BatchTracer: the statements queued in a
// batch (the append's inserts, the projectors' upserts) are the hottest
// ones, and they never pass TraceQueryStart.
func (m *QueryMetrics) TraceBatchStart(ctx context.Context, _ *pgx.Conn, _ pgx.TraceBatchStartData) context.Context {
	return ctx
}

// TraceBatchQuery implements pgx.BatchTracer: each queued statement is
// timed from when pgx asked for its result, which excludes the wait for
// the statements before it in the pipeline.
func (m *QueryMetrics) TraceBatchQuery(_ context.Context, _ *pgx.Conn, d pgx.TraceBatchQueryData) {
	if !d.ReadStartTime.IsZero() {
		m.seconds.WithLabelValues(StatementName(d.SQL)).Observe(time.Since(d.ReadStartTime).Seconds())
	}
}

// TraceBatchEnd implements pgx.BatchTracer.
func (m *QueryMetrics) TraceBatchEnd(context.Context, *pgx.Conn, pgx.TraceBatchEndData) {}
