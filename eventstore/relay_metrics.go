package eventstore

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

type relayMetrics struct {
	published     prometheus.Counter
	duplicates    prometheus.Counter
	publishErrors *prometheus.CounterVec // by reason
	storeErrors   *prometheus.CounterVec // by op
	lagEvents     prometheus.Gauge
	lagSeconds    prometheus.Gauge
}

// Publish error reasons: a fixed set, so the label stays bounded.
const (
	reasonTimeout      = "timeout"
	reasonDisconnected = "disconnected"
	reasonNoStream     = "no_stream"
	reasonOutOfOrder   = "out_of_order"
	reasonStalled      = "stalled"
	reasonRejected     = "rejected"
	reasonOther        = "other"
)

func newRelayMetrics(reg prometheus.Registerer) (*relayMetrics, error) {
	published := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_relay_events_published_total",
		Help: "Events acknowledged by JetStream, by result: stored, or duplicate (a re-publish the stream dropped)."},
		[]string{"result"})
	m := &relayMetrics{
		published:  published.WithLabelValues("stored"),
		duplicates: published.WithLabelValues("duplicate"),
		publishErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_relay_publish_errors_total",
			Help: "Failed publishes by reason; each one makes the relay publish again from the last acknowledged event."},
			[]string{"reason"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "afterok_relay_store_errors_total",
			Help: "Failed PostgreSQL operations of the relay (read, checkpoint, lag), retried."}, []string{"op"}),
		lagEvents: prometheus.NewGauge(prometheus.GaugeOpts{Name: "afterok_relay_lag_events",
			Help: "Events in the store not yet acknowledged by JetStream (counted up to 100,000)."}),
		lagSeconds: prometheus.NewGauge(prometheus.GaugeOpts{Name: "afterok_relay_lag_seconds",
			Help: "Recorded time of the store's newest event minus that of the last event relayed; 0 when caught up."}),
	}
	for _, r := range []string{reasonTimeout, reasonDisconnected, reasonNoStream, reasonOutOfOrder, reasonStalled, reasonRejected, reasonOther} {
		m.publishErrors.WithLabelValues(r)
	}
	for _, op := range []string{"read", "checkpoint", "lag"} {
		m.storeErrors.WithLabelValues(op)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{published, m.publishErrors, m.storeErrors, m.lagEvents, m.lagSeconds} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

// jsErrWrongLastMsgID is JetStream's error code for a message whose
// Nats-Expected-Last-Msg-Id is not the stream's last message id.
const jsErrWrongLastMsgID jetstream.ErrorCode = 10070

func publishErrorReason(err error) string {
	var apiErr *jetstream.APIError
	switch {
	case err == nil:
		return ""
	case errors.Is(err, errAckTimeout), errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return reasonTimeout
	case errors.Is(err, errNotConnected), errors.Is(err, nats.ErrDisconnected), errors.Is(err, nats.ErrConnectionClosed),
		errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionDraining):
		return reasonDisconnected
	case errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, nats.ErrNoResponders):
		return reasonNoStream
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return reasonStalled
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jsErrWrongLastMsgID:
		return reasonOutOfOrder
	case errors.As(err, &apiErr):
		return reasonRejected
	}
	return reasonOther
}

// Lag is how far the relay is behind the store, as last measured.
type Lag struct {
	// Events is the number of events after Cursor, counted up to
	// lagCountLimit.
	Events int64
	// Behind is the recorded time of the store's newest event minus that
	// of the last event relayed (of the oldest event, when none was
	// relayed yet); 0 when Events is 0. It stops growing when appends
	// stop, Events does not.
	Behind time.Duration
	// Cursor is the last event acknowledged by JetStream when measured.
	Cursor Cursor
	// MeasuredAt is zero until the first measurement.
	MeasuredAt time.Time
}

// Lag returns the last measurement (every LagInterval while Run runs), for
// readiness details.
func (r *Relay) Lag() Lag {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lag
}

// lagCountLimit bounds the count query: past it, "very far behind" is all
// an operator needs to know, and counting costs a scan of that many rows.
const lagCountLimit = 100_000

// lagSQL measures in one snapshot. It reads the events_tail index only.
const lagSQL = `-- name: relay.lag
SELECT
  (SELECT count(*) FROM (SELECT 1 FROM events WHERE (xid, global_position) > ($1::xid8, $2::bigint) LIMIT $3) behind),
  (SELECT recorded_at FROM events ORDER BY xid DESC, global_position DESC LIMIT 1),
  COALESCE((SELECT recorded_at FROM events WHERE global_position = $2),
           (SELECT recorded_at FROM events ORDER BY xid, global_position LIMIT 1))`

func (r *Relay) measureLag(ctx context.Context) error {
	at := r.ackedCursor()
	var n int64
	var newest, relayed *time.Time
	if err := r.cfg.Store.pool.QueryRow(ctx, lagSQL, at.XID, at.Position, lagCountLimit).Scan(&n, &newest, &relayed); err != nil {
		return err
	}
	lag := Lag{Events: n, Cursor: at, MeasuredAt: time.Now()}
	if n > 0 && newest != nil && relayed != nil {
		lag.Behind = max(newest.Sub(*relayed), 0)
	}
	r.mu.Lock()
	r.lag = lag
	r.mu.Unlock()
	r.metrics.lagEvents.Set(float64(lag.Events))
	r.metrics.lagSeconds.Set(lag.Behind.Seconds())
	return nil
}

func (r *Relay) lagLoop(ctx context.Context) {
	t := time.NewTicker(r.cfg.LagInterval)
	defer t.Stop()
	failures := 0
	for {
		switch err := r.measureLag(ctx); {
		case ctx.Err() != nil:
		case err != nil:
			r.metrics.storeErrors.WithLabelValues("lag").Inc()
			if failures++; failures%50 == 1 {
				r.log.Warn("relay: measuring lag failed", "err", err, "failures", failures)
			}
		default:
			failures = 0
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
