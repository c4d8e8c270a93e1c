package dispatch_test

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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

// outageRig is a worker's world on a PostgreSQL cluster the test owns (so
// that it can stop it) and the simulator as the providers.
type outageRig struct {
	cluster *storetest.Cluster
	db      *storetest.DB
	nats    *storetest.NATS
	store   *eventstore.Store
	sim     *sim.Simulator
	worker  *dispatch.Worker
}

func newOutageRig(t *testing.T, maxDeliver int, ackWait time.Duration) *outageRig {
	r := &outageRig{cluster: storetest.NewCluster(t)}
	r.db = r.cluster.NewDB(t, eventstore.PoolConfig{MaxConns: 8})
	r.nats = storetest.NewNATS(t)
	r.store = eventstore.New(r.db.Pool)
	sc := sim.DefaultConfig()
	sc.CallbackBase = "http://127.0.0.1:1" // receipts are not this test's concern
	var err error
	r.sim, err = sim.New(sc)
	require.NoError(t, err)
	srv := httptest.NewServer(r.sim.Handler())
	t.Cleanup(srv.Close)
	providers := map[string]provider.Provider{}
	for name, pc := range sc.Providers {
		p, err := provider.NewHTTP(provider.HTTPConfig{Name: name, BaseURL: srv.URL, APIKey: pc.APIKey, Timeout: 5 * time.Second})
		require.NoError(t, err)
		providers[name] = p
	}
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	r.worker, err = dispatch.New(dispatch.Config{Store: r.store, JetStream: r.nats.JS, Names: r.nats.Names, Providers: providers,
		Routes: routing.DefaultTable(), Breaker: breaker, Retry: routing.DefaultRetryPolicy(),
		MaxDeliver: maxDeliver, AckWait: ackWait})
	require.NoError(t, err)
	return r
}

// queuedMessage records a message accepted and queued for attempt 1, as
// the scheduler would, and returns its id.
func (r *outageRig) queuedMessage(t *testing.T) string {
	ctx := context.Background()
	id := ulid.Make().String()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	acc := domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
		Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: time.Now().Add(time.Hour), At: time.Now()}
	var m domain.Message
	require.NoError(t, m.Apply(acc))
	q, err := m.Queue("job", time.Now())
	require.NoError(t, err)
	_, err = r.store.Append(ctx, domain.MessageStream(id), eventstore.NoStream, eventstore.MustEvent(acc, md), eventstore.MustEvent(q, md))
	require.NoError(t, err)
	return id
}

func (r *outageRig) publishJob(t *testing.T, id string) uint64 {
	ack, err := r.nats.JS.Publish(context.Background(), r.nats.Names.DispatchSubject(id),
		[]byte(`{"message_id":"`+id+`","attempt":1,"account_id":"acc"}`), jetstream.WithMsgID(id+":1"))
	require.NoError(t, err)
	return ack.Sequence
}

func (r *outageRig) types(t *testing.T, id string) []string {
	recs, err := r.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
	if err != nil {
		return nil
	}
	var out []string
	for _, rec := range recs {
		out = append(out, rec.Type)
	}
	return out
}

// TestJobsWaitOutAStoreOutage: a job taken while PostgreSQL is down is held,
// not nak'ed, so the outage spends none of its deliveries. With MaxDeliver 3
// and an outage of 8 s, nak'ing every second (what a batch error did) used
// the job up and left the message queued for ever; held, the job submits
// once the store is back.
func TestJobsWaitOutAStoreOutage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newOutageRig(t, 3, 2*time.Second)
	id := r.queuedMessage(t)
	done := make(chan struct{})
	go func() { defer close(done); _ = r.worker.Run(ctx) }()
	defer func() { cancel(); <-done }()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		_, err := r.nats.JS.Consumer(ctx, r.nats.Names.DispatchStream(), "dispatch")
		return err == nil, "the worker's consumer"
	})

	r.cluster.Stop(t)
	r.publishJob(t, id)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		c, err := r.nats.JS.Consumer(ctx, r.nats.Names.DispatchStream(), "dispatch")
		if err != nil {
			return false, err.Error()
		}
		info, err := c.Info(ctx)
		return err == nil && info.Delivered.Consumer > 0, "the worker took the job"
	})
	time.Sleep(8 * time.Second) // fault injection: the database stays away
	r.cluster.Start(t)

	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		ts := r.types(t, id)
		return len(ts) == 4 && ts[3] == "MessageSubmitted", "history " + joinTypes(ts)
	})
	c, err := r.nats.JS.Consumer(ctx, r.nats.Names.DispatchStream(), "dispatch")
	require.NoError(t, err)
	info, err := c.Info(ctx)
	require.NoError(t, err)
	require.LessOrEqual(t, info.NumRedelivered, 1, "the outage spent the job's deliveries")
	require.Zero(t, r.sim.Stats().DuplicateSubmissions)
}

// TestDeadLetterWaitsForTheStore: the max-deliveries advisory comes once. If
// the store is away when it comes, the MessageFailed{dead_lettered} write is
// retried until it commits, and only then is the job removed; giving up
// (what the handler did) left the message waiting for a job that JetStream
// would never deliver again.
func TestDeadLetterWaitsForTheStore(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := newOutageRig(t, 3, 2*time.Second)
	id := r.queuedMessage(t)
	seq := r.publishJob(t, id)

	r.cluster.Stop(t)
	done := make(chan struct{})
	go func() { defer close(done); r.worker.RecordDeadLetter(ctx, seq, 3) }()
	time.Sleep(3 * time.Second) // fault injection: the database stays away
	r.cluster.Start(t)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the dead letter was not recorded within 30 s of the store's return")
	}
	ts := r.types(t, id)
	require.Equal(t, []string{"MessageAccepted", "MessageQueued", "MessageFailed"}, ts)
	recs, err := r.store.ReadStream(ctx, domain.MessageStream(id), 3)
	require.NoError(t, err)
	ev, err := recs[0].Decode()
	require.NoError(t, err)
	require.Equal(t, domain.CodeDeadLettered, ev.(domain.MessageFailed).Failure.Code)
	st, err := r.nats.JS.Stream(ctx, r.nats.Names.DispatchStream())
	require.NoError(t, err)
	_, err = st.GetMsg(ctx, seq)
	require.ErrorIs(t, err, jetstream.ErrMsgNotFound, "the job left the queue once its outcome was recorded")
}

func joinTypes(ts []string) string {
	out := ""
	for i, s := range ts {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}
