package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/projections"
)

// readEnv is the API with the projections running beside it. The
// pipeline is not: tests write its events through the domain's commands.
type readEnv struct {
	*env
	registry *prometheus.Registry
	stop     func()
}

func newReadEnv(t *testing.T) *readEnv {
	t.Helper()
	e := &readEnv{env: newEnv(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, accept.DefaultPolicy())}
	e.project()
	t.Cleanup(func() { e.stop() })
	return e
}

// project (re)starts the projection runner.
func (e *readEnv) project() {
	e.registry = prometheus.NewRegistry()
	r, err := projections.NewRunner(projections.Config{Store: e.store, Registerer: e.registry, Logger: quiet,
		Poll: 20 * time.Millisecond, LagInterval: 50 * time.Millisecond})
	require.NoError(e.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.Run(ctx) }()
	e.stop = func() { cancel(); <-done }
}

// placeOrder posts an order and returns its id and its messages' ids.
func (e *readEnv) placeOrder(key string, to ...string) (string, []string) {
	e.t.Helper()
	r := e.do("POST", "/v1/orders", key, order(to...))
	require.Equal(e.t, 202, r.status, "%s", r.raw)
	var ids []string
	for _, m := range r.body["messages"].([]any) {
		ids = append(ids, m.(map[string]any)["message_id"].(string))
	}
	return r.body["order_id"].(string), ids
}

type command func(m *domain.Message, at time.Time) (domain.Event, error)

// advance runs the pipeline's commands on a message, one event each.
func (e *readEnv) advance(id string, cmds ...command) {
	e.t.Helper()
	for _, cmd := range cmds {
		evs, err := e.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
		require.NoError(e.t, err)
		var m domain.Message
		for _, rec := range evs {
			ev, err := rec.Decode()
			require.NoError(e.t, err)
			require.NoError(e.t, m.Apply(ev))
		}
		ev, err := cmd(&m, time.Now())
		require.NoError(e.t, err)
		md := eventstore.Metadata{AccountID: m.AccountID, CorrelationID: m.OrderID, Actor: "test-pipeline"}
		_, err = e.store.Append(context.Background(), domain.MessageStream(id), eventstore.Exact(m.Version), eventstore.MustEvent(ev, md))
		require.NoError(e.t, err)
	}
}

func queue(m *domain.Message, at time.Time) (domain.Event, error) { return m.Queue("job-"+m.ID, at) }

func route(provider string) command {
	return func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Route(domain.RouteDecision{RouteID: "de", Provider: provider, Reason: "first healthy by priority"}, at)
	}
}

func submit(m *domain.Message, at time.Time) (domain.Event, error) {
	return m.Submit(fmt.Sprintf("%s-%d-%s", m.Provider, m.Attempt, m.ID[18:]), 35*time.Millisecond, at)
}

func deliver(m *domain.Message, at time.Time) (domain.Event, error) {
	return m.Deliver(m.Attempt, json.RawMessage(`{"stat":"DELIVRD"}`), at, at)
}

func failWith(code string, stage domain.Stage) command {
	return func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Fail(m.Attempt, domain.Failure{Code: code, Reason: "test " + code, Stage: stage, Provider: m.Provider}, nil, at)
	}
}

func retryWith(code string, stage domain.Stage) command {
	return func(m *domain.Message, at time.Time) (domain.Event, error) {
		return m.Retry(m.Attempt, domain.Failure{Code: code, Reason: "test " + code, Stage: stage, Provider: m.Provider},
			at.Add(time.Second), nil, at)
	}
}

// caughtUp waits until the projections have applied every committed event.
func (e *readEnv) caughtUp() {
	e.t.Helper()
	storetest.Poll(e.t, 60*time.Second, func() (bool, string) {
		st, err := projections.Statuses(context.Background(), e.db.Pool, time.Now())
		if err != nil {
			return false, err.Error()
		}
		for _, s := range st {
			if s.EventsBehind > 0 {
				return false, fmt.Sprintf("%+v", st)
			}
		}
		return true, ""
	})
}

// get is e.do for a GET that must succeed.
func (e *readEnv) get(path, key string) reply {
	e.t.Helper()
	r := e.do("GET", path, key, nil)
	require.Equal(e.t, 200, r.status, "GET %s: %s", path, r.raw)
	return r
}
