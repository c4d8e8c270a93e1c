package dispatch_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestJobLinesNameTheJob: the line a job's outcome logs names its message,
// attempt and provider, carried in the job's context to the worker's
// logger, which was handed in plain.
func TestJobLinesNameTheJob(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.NewDB(t)
	nc := storetest.NewNATS(t)
	store := eventstore.New(db.Pool)
	sc := sim.DefaultConfig()
	sc.CallbackBase = "http://127.0.0.1:1" // receipts are not this test's concern
	simulator, err := sim.New(sc)
	require.NoError(t, err)
	srv := httptest.NewServer(simulator.Handler())
	t.Cleanup(srv.Close)
	providers := map[string]provider.Provider{}
	for name, pc := range sc.Providers {
		p, err := provider.NewHTTP(provider.HTTPConfig{Name: name, BaseURL: srv.URL, APIKey: pc.APIKey, Timeout: 5 * time.Second})
		require.NoError(t, err)
		providers[name] = p
	}
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	var logs storetest.Logs
	w, err := dispatch.New(dispatch.Config{Store: store, JetStream: nc.JS, Names: nc.Names, Providers: providers,
		Routes: routing.DefaultTable(), Breaker: breaker, Retry: routing.DefaultRetryPolicy(),
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	defer func() { cancel(); <-done }()

	// The simulator refuses …0002 permanently as an invalid number.
	id := ulid.Make().String()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	acc := domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112340002", Body: "x", Segments: 1,
		Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: time.Now().Add(time.Hour), At: time.Now()}
	var m domain.Message
	require.NoError(t, m.Apply(acc))
	q, err := m.Queue("job", time.Now())
	require.NoError(t, err)
	_, err = store.Append(ctx, domain.MessageStream(id), eventstore.NoStream, eventstore.MustEvent(acc, md), eventstore.MustEvent(q, md))
	require.NoError(t, err)
	_, err = nc.JS.Publish(ctx, nc.Names.DispatchSubject(id), []byte(`{"message_id":"`+id+`","attempt":1,"account_id":"acc"}`))
	require.NoError(t, err)

	var line map[string]any
	storetest.Poll(t, 20*time.Second, func() (bool, string) {
		line = logs.Find("submission refused permanently")
		return line != nil, "the refusal's log line"
	})
	require.Equal(t, id, line["message_id"], "%v", line)
	require.EqualValues(t, 1, line["attempt"], "%v", line)
	require.Contains(t, []any{"sim-a", "sim-b"}, line["provider"], "%v", line)
	require.Equal(t, "dispatch", line["role"])
	require.NotEmpty(t, line["code"])
}
