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

// TestJobPastTheValidityExpiresTheMessage: a worker that takes a job for a
// message whose validity has ended records the message's expiry failure
// (the one domain.Message.Expire makes, which the scheduler's expiry round
// records too) instead of routing it, and drops the job.
func TestJobPastTheValidityExpiresTheMessage(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.NewDB(t)
	n := storetest.NewNATS(t)
	s := eventstore.New(db.Pool)
	id := ulid.Make().String()
	now := time.Now().UTC()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	history := []domain.Event{
		domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
			Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: now.Add(-time.Second), At: now.Add(-time.Minute)},
		domain.MessageQueued{Attempt: 1, JobID: "j", At: now},
	}
	for i, ev := range history {
		_, err := s.Append(ctx, domain.MessageStream(id), eventstore.Exact(i), eventstore.MustEvent(ev, md))
		require.NoError(t, err)
	}
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	w, err := dispatch.New(dispatch.Config{Store: s, JetStream: n.JS, Names: n.Names, Routes: routing.DefaultTable(),
		Breaker: breaker, Retry: routing.DefaultRetryPolicy(), AckWait: time.Second})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = w.Run(ctx) }()
	_, err = n.JS.Publish(ctx, n.Names.DispatchSubject(id), []byte(`{"message_id":"`+id+`","attempt":1,"account_id":"acc"}`),
		jetstream.WithMsgID(id+":1"))
	require.NoError(t, err)

	var recs []eventstore.RecordedEvent
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		recs, err = s.ReadStream(ctx, domain.MessageStream(id), 1)
		return err == nil && len(recs) == 3, fmt.Sprintf("%d events, %v", len(recs), err)
	})
	evs, err := eventstore.DecodeAll(recs)
	require.NoError(t, err)
	failed, ok := evs[2].(domain.MessageFailed)
	require.True(t, ok, "the event after MessageQueued is %s, not MessageFailed", evs[2].EventType())
	m, err := domain.LoadMessage(history)
	require.NoError(t, err)
	want, err := m.Expire(failed.At)
	require.NoError(t, err)
	require.Equal(t, want.Failure, failed.Failure, "the worker's expiry failure is the domain's")
	require.Equal(t, 1, failed.Attempt)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		st, err := n.JS.Stream(ctx, n.Names.DispatchStream())
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		return err == nil && info.State.Msgs == 0, "the job is still on the queue"
	})
	cancel()
	<-done
	require.NoError(t, eventstore.VerifyOK(context.Background(), db.Pool))
}
