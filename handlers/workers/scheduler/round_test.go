package scheduler_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/workers/scheduler"
)

// roundRig is a scheduler whose rounds the test runs by hand, at a time
// the test sets; its tail follower runs on its own (it only keeps
// message_schedule in step with the store).
type roundRig struct {
	db    *storetest.DB
	nats  *storetest.NATS
	store *eventstore.Store
	sched *scheduler.Scheduler
	now   atomic.Pointer[time.Time]
}

// newScheduler is the one place these tests build a Scheduler, so that a
// change of the constructor's shape is a one-line change here.
func newScheduler(t *testing.T, cfg scheduler.Config) *scheduler.Scheduler {
	t.Helper()
	v, err := scheduler.New(cfg)
	require.NoError(t, err)
	return v
}

func newRoundRig(t *testing.T, batch int, now time.Time) *roundRig {
	r := &roundRig{db: storetest.NewDB(t), nats: storetest.NewNATS(t)}
	r.store = eventstore.New(r.db.Pool)
	r.now.Store(&now)
	r.sched = newScheduler(t, scheduler.Config{Store: r.store, JetStream: r.nats.JS, Names: r.nats.Names, BatchSize: batch,
		Now: func() time.Time { return *r.now.Load() }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = r.sched.Follow(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

func (r *roundRig) setNow(at time.Time) { r.now.Store(&at) }

// message records a message accepted at acceptedAt (its first attempt is
// due then), valid until expires, followed by what steps make of it.
func (r *roundRig) message(t *testing.T, acceptedAt, expires time.Time, steps ...func(m *domain.Message) (domain.Event, error)) string {
	t.Helper()
	id := ulid.Make().String()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	var m domain.Message
	acc := domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
		Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: expires, At: acceptedAt}
	require.NoError(t, m.Apply(acc))
	evs := []eventstore.EventData{eventstore.MustEvent(acc, md)}
	for _, step := range steps {
		ev, err := step(&m)
		require.NoError(t, err)
		require.NoError(t, m.Apply(ev))
		evs = append(evs, eventstore.MustEvent(ev, md))
	}
	_, err := r.store.Append(context.Background(), domain.MessageStream(id), eventstore.NoStream, evs...)
	require.NoError(t, err)
	return id
}

// retriedAt is the history of a first attempt that failed transiently,
// its retry due at notBefore.
func retriedAt(notBefore time.Time) []func(m *domain.Message) (domain.Event, error) {
	at := notBefore.Add(-time.Hour)
	return []func(m *domain.Message) (domain.Event, error){
		func(m *domain.Message) (domain.Event, error) { return m.Queue("job-1", at) },
		func(m *domain.Message) (domain.Event, error) {
			return m.Route(domain.RouteDecision{RouteID: "default", Provider: "sim-a"}, at)
		},
		func(m *domain.Message) (domain.Event, error) {
			return m.Retry(1, domain.Failure{Code: domain.CodeProviderUnavailable, Stage: domain.StageSubmit, Provider: "sim-a"}, notBefore, nil, at)
		},
	}
}

// waitScheduled polls until the follower has a row for each message.
func (r *roundRig) waitScheduled(t *testing.T, ids ...string) {
	t.Helper()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		var n int
		err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM message_schedule WHERE message_id = ANY($1)`, ids).Scan(&n)
		return err == nil && n == len(ids), fmt.Sprintf("%d of %d messages scheduled (%v)", n, len(ids), err)
	})
}

// waitRetryScheduled polls until the follower has moved each message's row
// on to attempt 2.
func (r *roundRig) waitRetryScheduled(t *testing.T, ids ...string) {
	t.Helper()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		var n int
		err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM message_schedule WHERE message_id = ANY($1) AND attempt = 2`, ids).Scan(&n)
		return err == nil && n == len(ids), fmt.Sprintf("%d of %d retries scheduled (%v)", n, len(ids), err)
	})
}

func (r *roundRig) round(t *testing.T, round func(context.Context) (int, error)) int {
	t.Helper()
	n, err := round(context.Background())
	require.NoError(t, err)
	return n
}

// queuedAttempts is each message's MessageQueued attempts, in order.
func (r *roundRig) queuedAttempts(t *testing.T, id string) []int {
	t.Helper()
	recs, err := r.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
	require.NoError(t, err)
	evs, err := eventstore.DecodeAll(recs)
	require.NoError(t, err)
	var out []int
	for _, ev := range evs {
		if q, ok := ev.(domain.MessageQueued); ok {
			out = append(out, q.Attempt)
		}
	}
	return out
}

// jobIDs is the deduplication id of every job on the dispatch stream.
func (r *roundRig) jobIDs(t *testing.T) []string {
	t.Helper()
	ctx := context.Background()
	st, err := r.nats.JS.Stream(ctx, r.nats.Names.DispatchStream())
	require.NoError(t, err)
	info, err := st.Info(ctx)
	require.NoError(t, err)
	var out []string
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		msg, err := st.GetMsg(ctx, seq)
		require.NoError(t, err)
		out = append(out, msg.Header.Get("Nats-Msg-Id"))
	}
	return out
}

// TestQueueRoundPicksTheDueOldestFirst: a round queues what is due (a new
// message, a retry whose time has come), the longest-waiting first and no
// more than its batch; it leaves alone a retry not yet due and a message
// it already queued.
func TestQueueRoundPicksTheDueOldestFirst(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	r := newRoundRig(t, 2, t0)
	valid := t0.Add(time.Hour)
	oldest := r.message(t, t0.Add(-3*time.Minute), valid)
	retryDue := r.message(t, t0.Add(-3*time.Hour), valid, retriedAt(t0.Add(-2*time.Minute))...)
	newer := r.message(t, t0.Add(-time.Minute), valid)
	retryLater := r.message(t, t0.Add(-3*time.Hour), valid, retriedAt(t0.Add(time.Minute))...)
	r.waitScheduled(t, oldest, retryDue, newer, retryLater)
	r.waitRetryScheduled(t, retryDue, retryLater)

	require.Equal(t, 2, r.round(t, r.sched.QueueRound), "the batch bounds the round")
	require.Equal(t, []int{1}, r.queuedAttempts(t, oldest))
	require.Equal(t, []int{1, 2}, r.queuedAttempts(t, retryDue), "the retry is queued as attempt 2")
	require.Nil(t, r.queuedAttempts(t, newer), "beyond the batch: next round")

	require.Equal(t, 1, r.round(t, r.sched.QueueRound))
	require.Equal(t, []int{1}, r.queuedAttempts(t, newer))

	require.Equal(t, 0, r.round(t, r.sched.QueueRound), "nothing due: the retry waits, the queued are not queued again")
	require.Equal(t, []int{1}, r.queuedAttempts(t, retryLater))

	r.setNow(t0.Add(time.Minute))
	require.Equal(t, 1, r.round(t, r.sched.QueueRound), "the retry's time came")
	require.Equal(t, []int{1, 2}, r.queuedAttempts(t, retryLater))
	require.Equal(t, 0, r.round(t, r.sched.QueueRound))

	require.Equal(t, []string{oldest + ":1", retryDue + ":2", newer + ":1", retryLater + ":2"}, r.jobIDs(t),
		"one job per queued attempt, in the order queued")
}

// TestExpireRoundFailsTheLapsed: a round fails, as expired, the messages
// whose validity ended (wherever they stand short of a final state), no
// more than its batch, and leaves valid ones alone.
func TestExpireRoundFailsTheLapsed(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	r := newRoundRig(t, 2, t0)
	future := t0.Add(time.Hour) // not due for queueing: only expiry concerns this test
	lapsedA := r.message(t, future, t0.Add(-3*time.Second))
	lapsedB := r.message(t, future, t0.Add(-2*time.Second), retriedAt(future)...)
	lapsedC := r.message(t, future, t0.Add(-time.Second))
	valid := r.message(t, future, t0.Add(time.Minute))
	r.waitScheduled(t, lapsedA, lapsedB, lapsedC, valid)
	r.waitRetryScheduled(t, lapsedB)

	require.Equal(t, 2, r.round(t, r.sched.ExpireRound), "the batch bounds the round")
	require.Equal(t, 1, r.round(t, r.sched.ExpireRound))
	require.Equal(t, 0, r.round(t, r.sched.ExpireRound))
	for _, id := range []string{lapsedA, lapsedB, lapsedC} {
		recs, err := r.store.ReadStream(context.Background(), domain.MessageStream(id), 1)
		require.NoError(t, err)
		last, err := recs[len(recs)-1].Decode()
		require.NoError(t, err)
		f, ok := last.(domain.MessageFailed)
		require.True(t, ok, "%s ends %T", id, last)
		require.Equal(t, domain.CodeExpired, f.Failure.Code)
		require.Equal(t, domain.StageExpiry, f.Failure.Stage)
		require.True(t, f.Failure.Permanent)
	}
	require.Equal(t, []string{"MessageAccepted"}, types(t, r.store, valid))
	require.Equal(t, 0, r.round(t, r.sched.QueueRound), "nothing was due for queueing")
	require.Empty(t, r.jobIDs(t))
}

// scheduledMessage records a message accepted at acceptedAt with a
// send_at, valid until expires.
func (r *roundRig) scheduledMessage(t *testing.T, acceptedAt, sendAt, expires time.Time) string {
	t.Helper()
	id := ulid.Make().String()
	acc := domain.MessageAccepted{MessageID: id, OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x", Segments: 1,
		Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: expires, SendAt: sendAt, At: acceptedAt}
	_, err := r.store.Append(context.Background(), domain.MessageStream(id), eventstore.NoStream,
		eventstore.MustEvent(acc, eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}))
	require.NoError(t, err)
	return id
}

// TestScheduledMessageWaitsForItsSendAt: a message with a send_at is not
// queued by any round before that time, and is queued by the first round
// after it; its validity (counted from send_at) does not expire it while it
// waits.
func TestScheduledMessageWaitsForItsSendAt(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	r := newRoundRig(t, 10, t0)
	sendAt := t0.Add(10 * time.Minute)
	scheduled := r.scheduledMessage(t, t0, sendAt, sendAt.Add(time.Hour))
	now := r.message(t, t0, t0.Add(time.Hour))
	r.waitScheduled(t, scheduled, now)

	require.Equal(t, 1, r.round(t, r.sched.QueueRound), "only the unscheduled message is due")
	require.Equal(t, []int{1}, r.queuedAttempts(t, now))
	r.setNow(sendAt.Add(-time.Millisecond))
	require.Equal(t, 0, r.round(t, r.sched.QueueRound), "a millisecond before its send_at")
	require.Equal(t, 0, r.round(t, r.sched.ExpireRound), "its validity counts from send_at")
	require.Nil(t, r.queuedAttempts(t, scheduled))

	r.setNow(sendAt)
	require.Equal(t, 1, r.round(t, r.sched.QueueRound), "its send_at came")
	require.Equal(t, []int{1}, r.queuedAttempts(t, scheduled))
}

// TestCanceledMessageLeavesTheSchedule: a scheduled message canceled
// before it is due loses its row, so no round ever queues or expires it.
func TestCanceledMessageLeavesTheSchedule(t *testing.T) {
	t.Parallel()
	t0 := time.Now().UTC().Truncate(time.Millisecond)
	r := newRoundRig(t, 10, t0)
	sendAt := t0.Add(time.Minute)
	id := r.scheduledMessage(t, t0, sendAt, sendAt.Add(time.Hour))
	r.waitScheduled(t, id)
	_, err := r.store.Append(context.Background(), domain.MessageStream(id), eventstore.Exact(1),
		eventstore.MustEvent(domain.MessageCanceled{Actor: "key-1", Reason: "test", At: t0},
			eventstore.Metadata{AccountID: "acc", CorrelationID: "o", Actor: "key-1"}))
	require.NoError(t, err)
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		var n int
		err := r.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM message_schedule WHERE message_id = $1`, id).Scan(&n)
		return err == nil && n == 0, fmt.Sprintf("%d rows (%v)", n, err)
	})
	r.setNow(sendAt.Add(2 * time.Hour))
	require.Equal(t, 0, r.round(t, r.sched.QueueRound))
	require.Equal(t, 0, r.round(t, r.sched.ExpireRound))
	require.Equal(t, []string{"MessageAccepted", "MessageCanceled"}, types(t, r.store, id))
}
