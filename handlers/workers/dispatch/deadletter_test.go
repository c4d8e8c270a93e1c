package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// TestJobAtItsDeliveryLimitFailsTheMessage: a job whose message never
// becomes ready for it (here: nobody records MessageQueued) is redelivered
// until JetStream's MaxDeliver; the worker then records
// MessageFailed{dead_lettered} and removes the job, instead of leaving the
// message waiting for a job that no longer comes.
func TestJobAtItsDeliveryLimitFailsTheMessage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.NewDB(t)
	n := storetest.NewNATS(t)
	s := eventstore.New(db.Pool)
	id := ulid.Make().String()
	_, err := s.Append(ctx, domain.MessageStream(id), eventstore.NoStream, eventstore.MustEvent(
		domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
			Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: time.Now().Add(time.Hour), At: time.Now()},
		eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}))
	require.NoError(t, err)
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	w, err := dispatch.New(dispatch.Config{Store: s, JetStream: n.JS, Names: n.Names, Routes: routing.DefaultTable(),
		Breaker: breaker, Retry: routing.DefaultRetryPolicy(), MaxDeliver: 2, AckWait: time.Second})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	// Wait until the worker's consumer (and its advisory watch) exist.
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		_, err := n.JS.Consumer(ctx, n.Names.DispatchStream(), "dispatch")
		return err == nil, "the worker's consumer"
	})
	_, err = n.JS.Publish(ctx, n.Names.DispatchSubject(id), []byte(`{"message_id":"`+id+`","attempt":1,"account_id":"acc"}`),
		jetstream.WithMsgID(id+":1"))
	require.NoError(t, err)

	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		recs, err := s.ReadStream(ctx, domain.MessageStream(id), 1)
		return err == nil && len(recs) == 2, fmt.Sprintf("%d events (%v), want MessageFailed", len(recs), err)
	})
	recs, err := s.ReadStream(ctx, domain.MessageStream(id), 1)
	require.NoError(t, err)
	evs, err := eventstore.DecodeAll(recs)
	require.NoError(t, err)
	f := evs[1].(domain.MessageFailed).Failure
	require.Equal(t, domain.CodeDeadLettered, f.Code)
	require.True(t, f.Permanent)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		st, err := n.JS.Stream(ctx, n.Names.DispatchStream())
		if err != nil {
			return false, "the dead job left the queue"
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0, "the dead job left the queue"
	})
	cancel()
	<-done
	require.NoError(t, eventstore.VerifyOK(context.Background(), db.Pool))
}
