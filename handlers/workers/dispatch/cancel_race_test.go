package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/cancel"
	"github.com/afterok/afterok/handlers/provider"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// simRecord wraps the provider simulator's HTTP API and records the
// reference (message id) of every submission that reaches it, single or
// batched: what a provider got to see.
type simRecord struct {
	next http.Handler
	mu   sync.Mutex
	seen map[string]int
}

func (s *simRecord) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodPost {
		body, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(bytes.NewReader(body))
		var one struct {
			Reference string `json:"reference"`
		}
		var batch struct {
			Messages []struct {
				Reference string `json:"reference"`
			} `json:"messages"`
		}
		_ = json.Unmarshal(body, &one)
		_ = json.Unmarshal(body, &batch)
		s.mu.Lock()
		if one.Reference != "" {
			s.seen[one.Reference]++
		}
		for _, m := range batch.Messages {
			s.seen[m.Reference]++
		}
		s.mu.Unlock()
	}
	s.next.ServeHTTP(w, r)
}

func (s *simRecord) saw(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[id] > 0
}

// TestCancelRacingDispatchHasOneWinner races a cancel against running
// dispatch workers for every message, round after round, with the jobs
// and the cancels released together and jittered so that each side wins
// some. Half the messages are queued for their first attempt, half for a
// retry (their first attempt was routed and failed to submit): a cancel is
// legal for both. Each message must end exactly one way: canceled (the
// cancel said so, the history has MessageCanceled and no MessageRouted for
// the attempt it was queued for, and the provider simulator never received
// it) or routed and submitted (the cancel answered not cancelable, and the
// history has no MessageCanceled).
func TestCancelRacingDispatchHasOneWinner(t *testing.T) {
	t.Parallel()
	const rounds, perRound = 25, 24
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	nats := storetest.NewNATS(t)

	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{}`)) // receipts are not this test's business
	}))
	t.Cleanup(sink.Close)
	sc := sim.DefaultConfig()
	sc.CallbackBase = sink.URL
	sc.SubmitLatency, sc.SubmitJitter = time.Millisecond, time.Millisecond
	simulator, err := sim.New(sc)
	require.NoError(t, err)
	record := &simRecord{next: simulator.Handler(), seen: map[string]int{}}
	simSrv := httptest.NewServer(record)
	t.Cleanup(simSrv.Close)
	ctx, stop := context.WithCancel(context.Background())
	simDone := make(chan struct{})
	go func() { defer close(simDone); _ = simulator.Run(ctx) }()
	t.Cleanup(func() { stop(); <-simDone })

	providers := map[string]provider.Provider{}
	for _, name := range []string{"sim-a", "sim-b"} {
		p, err := provider.NewHTTP(provider.HTTPConfig{Name: name, BaseURL: simSrv.URL, APIKey: sc.Providers[name].APIKey,
			Timeout: 5 * time.Second})
		require.NoError(t, err)
		providers[name] = p
	}
	breaker, err := routing.NewBreaker(routing.DefaultBreakerConfig())
	require.NoError(t, err)
	// Batches of several jobs, two fetchers: a lost race of one message
	// must not cost its batch mates anything but a rerun.
	w := newWorker(t, dispatch.Config{Store: store, JetStream: nats.JS, Names: nats.Names, Providers: providers,
		Routes: routing.DefaultTable(), Breaker: breaker, Retry: rigRetry, BatchSize: 6, Fetchers: 2, AckWait: 10 * time.Second})
	workerDone := make(chan struct{})
	go func() { defer close(workerDone); _ = w.Run(ctx) }()
	t.Cleanup(func() { stop(); <-workerDone })
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		_, err := nats.JS.Consumer(ctx, nats.Names.DispatchStream(), "dispatch")
		return err == nil, "the worker's consumer"
	})
	r := &workerRig{store: store, nats: nats}
	canceler := cancel.New(store, time.Now)
	req := cancel.Request{AccountID: "acc", KeyID: "key-race", Reason: "race test"}

	type outcome struct {
		canceled bool // the cancel's answer
		err      error
	}
	outcomes := map[string]outcome{}
	var ids []string
	attempt := map[string]int{} // the attempt each message is queued for
	var publishErrs []error
	start := time.Now()
	for range rounds {
		batch := queuedMessages(t, store, perRound/2)
		for _, id := range batch {
			attempt[id] = 1
		}
		for _, id := range retryQueuedMessages(t, store, perRound/2) {
			attempt[id] = 2
			batch = append(batch, id)
		}
		// Interleaved, so that first attempts and retries meet the
		// cancels' spread alike.
		rand.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i, id := range batch {
			wg.Add(2)
			// The job and the cancel go out together, each after its own
			// small jitter, so that the order in which they reach the
			// message varies from message to message.
			go func() {
				defer wg.Done()
				time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond) // jitter, not a wait for a result
				job := fmt.Sprintf(`{"message_id":%q,"attempt":%d,"account_id":"acc"}`, id, attempt[id])
				_, err := nats.JS.Publish(context.Background(), nats.Names.DispatchSubject(id), []byte(job),
					jetstream.WithMsgID(fmt.Sprintf("%s:%d", id, attempt[id])))
				if err != nil {
					mu.Lock()
					publishErrs = append(publishErrs, err)
					mu.Unlock()
				}
			}()
			go func() {
				defer wg.Done()
				// Spread over the time a worker takes to fetch, load and route
				// a batch, so that both sides win some.
				time.Sleep(time.Duration(i*10+rand.IntN(10)) * time.Millisecond) // jitter, not a wait for a result
				m, err := canceler.Message(context.Background(), req, id)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil && m.State != domain.StateCanceled:
					outcomes[id] = outcome{err: fmt.Errorf("cancel answered state %q", m.State)}
				case err == nil:
					outcomes[id] = outcome{canceled: true}
				case errors.Is(err, cancel.ErrNotCancelable):
					outcomes[id] = outcome{}
				default:
					outcomes[id] = outcome{err: err}
				}
			}()
		}
		wg.Wait()
		require.Empty(t, publishErrs)
		ids = append(ids, batch...)
	}

	t.Logf("rounds done after %s", time.Since(start))
	// Wait until every message is settled one way or the other.
	storetest.Poll(t, 60*time.Second, func() (bool, string) {
		pending := 0
		for _, id := range ids {
			types, _ := r.events(t, id)
			last := types[len(types)-1]
			if last != "MessageCanceled" && last != "MessageSubmitted" {
				pending++
			}
		}
		return pending == 0, fmt.Sprintf("%d of %d messages neither canceled nor submitted", pending, len(ids))
	})
	// canceled and routed count the races each side won, by attempt.
	canceled, routed := map[int]int{}, map[int]int{}
	for _, id := range ids {
		o := outcomes[id]
		require.NoError(t, o.err, "cancel of %s", id)
		types, _ := r.events(t, id)
		queued := []string{"MessageAccepted", "MessageQueued"}
		if attempt[id] == 2 {
			queued = append(queued, "MessageRouted", "MessageRetried", "MessageQueued")
		}
		require.Equal(t, queued, types[:min(len(queued), len(types))], id)
		race := types[len(queued):] // what the race wrote
		hasCancel, hasRoute := slices.Contains(race, "MessageCanceled"), slices.Contains(race, "MessageRouted")
		require.False(t, hasCancel && hasRoute, "%s was both canceled and routed: %s", id, strings.Join(types, ","))
		if o.canceled {
			canceled[attempt[id]]++
			require.Equal(t, []string{"MessageCanceled"}, race, id)
			require.False(t, record.saw(id), "the simulator received canceled message %s", id)
		} else {
			routed[attempt[id]]++
			require.Equal(t, []string{"MessageRouted", "MessageSubmitted"}, race, id)
			require.True(t, record.saw(id), "%s was submitted without the simulator seeing it", id)
		}
	}
	t.Logf("settled after %s", time.Since(start))
	t.Logf("%d messages: canceled first %v, routed first %v (by attempt)", len(ids), canceled, routed)
	for _, a := range []int{1, 2} {
		require.NotZero(t, canceled[a], "no cancel won a race for attempt %d: the test raced nothing", a)
		require.NotZero(t, routed[a], "no worker won a race for attempt %d: the test raced nothing", a)
	}
	// Every job, the canceled messages' included, left the work queue.
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		st, err := nats.JS.Stream(ctx, nats.Names.DispatchStream())
		if err != nil {
			return false, err.Error()
		}
		info, err := st.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		return info.State.Msgs == 0, fmt.Sprintf("%d jobs still on the work queue", info.State.Msgs)
	})
	require.NoError(t, eventstore.VerifyOK(ctx, db.Pool))
}

// queuedMessages records n messages accepted and queued for attempt 1, as
// the scheduler would, in one commit, and returns their ids.
func queuedMessages(t *testing.T, store *eventstore.Store, n int) []string {
	t.Helper()
	return messagesQueued(t, store, n, false)
}

// retryQueuedMessages records n messages whose first attempt was routed
// and failed to submit (a transient failure at no provider in particular,
// so that none is excluded) and that are queued for attempt 2, as the
// scheduler queues a retry that came due, and returns their ids.
func retryQueuedMessages(t *testing.T, store *eventstore.Store, n int) []string {
	t.Helper()
	return messagesQueued(t, store, n, true)
}

func messagesQueued(t *testing.T, store *eventstore.Store, n int, retried bool) []string {
	t.Helper()
	md := eventstore.Metadata{AccountID: "acc", CorrelationID: "o"}
	now := time.Now()
	ids := make([]string, n)
	appends := make([]eventstore.StreamAppend, n)
	for i := range ids {
		ids[i] = ulid.Make().String()
		acc := domain.MessageAccepted{MessageID: ids[i], OrderID: "o", AccountID: "acc", To: "+4915112345678", Body: "x",
			Segments: 1, Price: domain.Money{AmountMicros: 1, Currency: "EUR"}, ExpiresAt: now.Add(time.Hour), At: now}
		appends[i] = eventstore.StreamAppend{Stream: domain.MessageStream(ids[i]), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(acc, md),
				eventstore.MustEvent(domain.MessageQueued{Attempt: 1, JobID: "job", At: now}, md)}}
		if retried {
			appends[i].Events = append(appends[i].Events,
				eventstore.MustEvent(domain.MessageRouted{Attempt: 1, Route: domain.RouteDecision{RouteID: "r", Provider: "sim-a", Reason: "test"}, At: now}, md),
				eventstore.MustEvent(domain.MessageRetried{Attempt: 1, NextAttempt: 2, NotBefore: now,
					Failure: domain.Failure{Code: domain.CodeProviderUnavailable, Reason: "test", Stage: domain.StageSubmit}, At: now}, md),
				eventstore.MustEvent(domain.MessageQueued{Attempt: 2, JobID: "job2", At: now}, md))
		}
	}
	_, err := store.AppendMulti(context.Background(), appends)
	require.NoError(t, err)
	return ids
}
