package eventstore_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// relayRig is a store and a JetStream with its own streams.
type relayRig struct {
	t     *testing.T
	db    *storetest.DB
	store *eventstore.Store
	nats  *storetest.NATS
}

func newRelayRig(t *testing.T, opts ...eventstore.Option) *relayRig {
	t.Helper()
	s, db := newStore(t, opts...)
	return &relayRig{t: t, db: db, store: s, nats: storetest.NewNATS(t)}
}

// config is a relay configuration with small batches and windows, so that
// tests cross many batch and window boundaries, and short intervals.
func (g *relayRig) config(reg prometheus.Registerer) eventstore.RelayConfig {
	return eventstore.RelayConfig{
		Store: g.store, JetStream: g.nats.JS, Names: g.nats.Names,
		BatchSize: 17, MaxInFlight: 8, Poll: 20 * time.Millisecond, AckTimeout: 2 * time.Second,
		CheckpointInterval: 10 * time.Millisecond, LagInterval: 10 * time.Millisecond,
		Logger:     slog.New(slog.NewTextHandler(g.t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})),
		Registerer: reg,
	}
}

// running is a relay started by a test.
type running struct {
	*eventstore.Relay
	// stop cancels the relay's context and returns what Run returned.
	stop func() error
}

// start runs a relay until stop is called or the test ends.
func (g *relayRig) start(cfg eventstore.RelayConfig) *running {
	g.t.Helper()
	r, err := eventstore.NewRelay(cfg)
	require.NoError(g.t, err)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	run := &running{Relay: r, stop: sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			g.t.Error("relay did not stop within 30s of its context ending")
			return nil
		}
	})}
	g.t.Cleanup(func() { _ = run.stop() })
	return run
}

// tail is every event in the store, in tail order. It waits for the tail
// to show every committed event: while another writing transaction is open
// (the relay writing its checkpoint) the tail holds back what committed
// after it began.
func (g *relayRig) tail() []eventstore.RecordedEvent {
	g.t.Helper()
	ctx := context.Background()
	var evs []eventstore.RecordedEvent
	storetest.Poll(g.t, 30*time.Second, func() (bool, string) {
		var n int
		if err := g.db.Pool.QueryRow(ctx, `SELECT count(*) FROM events`).Scan(&n); err != nil {
			return false, err.Error()
		}
		var err error
		evs, _, err = g.store.ReadAll(ctx, eventstore.Cursor{}, 1_000_000, eventstore.Filter{})
		return err == nil && len(evs) == n, fmt.Sprintf("read %d of %d events (%v)", len(evs), n, err)
	})
	return evs
}

// waitCheckpoint waits until the relay's checkpoint reaches the last event
// of tail: every event was acknowledged by the stream.
func (g *relayRig) waitCheckpoint(name string, tail []eventstore.RecordedEvent, within time.Duration) {
	g.t.Helper()
	want := tail[len(tail)-1].Cursor()
	storetest.Poll(g.t, within, func() (bool, string) {
		got, err := eventstore.Checkpoint(context.Background(), g.db.Pool, name)
		return err == nil && got == want, fmt.Sprintf("checkpoint %s never reached %s", name, want)
	})
}

// streamCount is the number of messages in the events stream (0 while the
// server is away).
func (g *relayRig) streamCount() uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	st, err := g.nats.JS.Stream(ctx, g.nats.Names.EventsStream())
	if err != nil {
		return 0
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// received is one message read back from the events stream.
type received struct {
	subject string
	header  map[string][]string
	env     eventstore.Envelope
}

// readStream reads every message of the events stream matching filter
// ("" for all) with an ordered consumer, in stream order.
func (g *relayRig) readStream(filter string) []received {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := g.nats.JS.Stream(ctx, g.nats.Names.EventsStream())
	require.NoError(g.t, err)
	var want uint64
	var cfg jetstream.OrderedConsumerConfig
	if filter == "" {
		info, err := st.Info(ctx)
		require.NoError(g.t, err)
		want = info.State.Msgs
	} else {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
		require.NoError(g.t, err)
		for _, n := range info.State.Subjects {
			want += n
		}
		cfg.FilterSubjects = []string{filter}
	}
	cons, err := st.OrderedConsumer(ctx, cfg)
	require.NoError(g.t, err)
	var out []received
	for uint64(len(out)) < want {
		batch, err := cons.Fetch(int(min(want-uint64(len(out)), 500)), jetstream.FetchMaxWait(5*time.Second))
		require.NoError(g.t, err)
		n := 0
		for m := range batch.Messages() {
			n++
			var env eventstore.Envelope
			require.NoError(g.t, json.Unmarshal(m.Data(), &env), "body %s", m.Data())
			out = append(out, received{subject: m.Subject(), header: m.Headers(), env: env})
		}
		require.NoError(g.t, batch.Error())
		require.NotZero(g.t, n, "the stream holds %d messages, the consumer stopped after %d", want, len(out))
	}
	return out
}

func ids[T any](xs []T, id func(T) uuid.UUID) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = id(x).String()
	}
	return out
}

// requireStreamIsTail checks that the events stream holds every event of
// tail exactly once, in tail order, with its subject, headers and envelope.
func (g *relayRig) requireStreamIsTail(tail []eventstore.RecordedEvent) {
	g.t.Helper()
	got := g.readStream("")
	require.Equal(g.t,
		ids(tail, func(e eventstore.RecordedEvent) uuid.UUID { return e.ID }),
		ids(got, func(r received) uuid.UUID { return r.env.EventID }),
		"the stream must hold each stored event once, in tail order")
	names := g.nats.Names
	for i, e := range tail {
		m := got[i]
		agg, _, _ := cut(e.StreamID)
		require.Equal(g.t, names.EventSubject(e.AccountID, agg, e.Type), m.subject, "event %d", i)
		require.Equal(g.t, []string{e.ID.String()}, m.header["Nats-Msg-Id"])
		require.Equal(g.t, []string{e.StreamID}, m.header[eventstore.HeaderStreamID])
		require.Equal(g.t, []string{strconv.FormatInt(e.Position, 10)}, m.header[eventstore.HeaderPosition])
		require.Equal(g.t, []string{e.Type}, m.header[eventstore.HeaderType])
		env := m.env
		require.Equal(g.t, e.Position, env.Position)
		require.Equal(g.t, e.StreamID, env.StreamID)
		require.Equal(g.t, e.Version, env.Version)
		require.Equal(g.t, e.Type, env.Type)
		require.Equal(g.t, e.SchemaVersion, env.SchemaVersion)
		require.Equal(g.t, e.AccountID, env.AccountID)
		require.JSONEq(g.t, string(e.Data), string(env.Data))
		meta, err := json.Marshal(e.Metadata)
		require.NoError(g.t, err)
		require.JSONEq(g.t, string(meta), string(env.Metadata))
		require.True(g.t, e.RecordedAt.Equal(env.RecordedAt), "recorded_at %s, envelope %s", e.RecordedAt, env.RecordedAt)
	}
}

// cut is the aggregate rule docs/events.md states, written out again so
// that a change to the relay's rule shows up here.
func cut(streamID string) (string, string, bool) {
	for i := range len(streamID) {
		if streamID[i] == '-' {
			return streamID[:i], streamID[i+1:], true
		}
	}
	return streamID, "", false
}

// metric returns the value of a counter or gauge in reg ("name" or
// "name{label=value}").
func metric(t *testing.T, reg *prometheus.Registry, name string, label ...string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(label); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == label[i] && lp.GetValue() == label[i+1])
				}
				if !found {
					continue next
				}
			}
			if m.GetCounter() != nil {
				return m.GetCounter().GetValue()
			}
			return m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s%v not registered", name, label)
	return 0
}

func sumPublishErrors(t *testing.T, reg *prometheus.Registry) float64 {
	total := 0.0
	for _, r := range []string{"timeout", "disconnected", "no_stream", "out_of_order", "stalled", "rejected", "other"} {
		total += metric(t, reg, "afterok_relay_publish_errors_total", "reason", r)
	}
	return total
}

func TestRelayPublishesEveryEventOnceInTailOrder(t *testing.T) {
	ctx := context.Background()
	g := newRelayRig(t)
	md := func(acc string) eventstore.Metadata {
		return eventstore.Metadata{AccountID: acc, CorrelationID: "o1", Actor: "test"}
	}
	event := func(typ string, acc string, n int) eventstore.EventData {
		return eventstore.EventData{Type: typ, SchemaVersion: 1 + n%2, Data: []byte(fmt.Sprintf(`{"n": %d, "s": "<é&\"x\">"}`, n)), Metadata: md(acc)}
	}
	appendSome := func(round int) {
		// An order with its messages in one atomic append, as the API does.
		batch := []eventstore.StreamAppend{{Stream: fmt.Sprintf("order-%d", round), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{event("OrderAccepted", "acc1", round), event("BalanceReserved", "acc1", round)}}}
		for i := range 5 {
			batch = append(batch, eventstore.StreamAppend{Stream: fmt.Sprintf("message-%d-%d", round, i), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{event("MessageAccepted", "acc1", i)}})
		}
		_, err := g.store.AppendMulti(ctx, batch)
		require.NoError(t, err)
		_, err = g.store.Append(ctx, "account-acc2", eventstore.Any, event("AccountCredited", "acc2", round))
		require.NoError(t, err)
		// No account, no '-' in the stream id, subject-unsafe characters.
		_, err = g.store.Append(ctx, "settings", eventstore.Any, event("Changed.v2", "", round))
		require.NoError(t, err)
		// (NATS headers cannot carry line breaks; afterok's ids have none.)
		_, err = g.store.Append(ctx, fmt.Sprintf("message-\"odd\" id\\ü.* %d", round), eventstore.NoStream, event("MessageAccepted", "acc 3.x", round))
		require.NoError(t, err)
	}
	for round := range 10 {
		appendSome(round)
	}
	reg := prometheus.NewRegistry()
	relay := g.start(g.config(reg))
	for round := 10; round < 30; round++ {
		appendSome(round)
	}
	tail := g.tail()
	require.Len(t, tail, 30*10)
	g.waitCheckpoint("relay", tail, 30*time.Second)
	g.requireStreamIsTail(tail)

	// Subscribers filter by subject, as docs/events.md shows.
	names := g.nats.Names
	for _, c := range []struct {
		filter string
		want   func(e eventstore.RecordedEvent) bool
	}{
		{names.EventsFilter("acc2"), func(e eventstore.RecordedEvent) bool { return e.AccountID == "acc2" }},
		{names.Prefix + ".events.*.order.>", func(e eventstore.RecordedEvent) bool { a, _, _ := cut(e.StreamID); return a == "order" }},
		{names.Prefix + ".events.*.*.MessageAccepted", func(e eventstore.RecordedEvent) bool { return e.Type == "MessageAccepted" }},
	} {
		var want []string
		for _, e := range tail {
			if c.want(e) {
				want = append(want, e.ID.String())
			}
		}
		require.NotEmpty(t, want)
		require.Equal(t, want, ids(g.readStream(c.filter), func(r received) uuid.UUID { return r.env.EventID }), c.filter)
	}

	require.Equal(t, float64(len(tail)), metric(t, reg, "afterok_relay_events_published_total", "result", "stored"))
	require.Zero(t, metric(t, reg, "afterok_relay_events_published_total", "result", "duplicate"))
	require.Zero(t, sumPublishErrors(t, reg))
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		lag := relay.Lag()
		return lag.Cursor == tail[len(tail)-1].Cursor() && lag.Events == 0 && lag.Behind == 0, fmt.Sprintf("lag: %+v", lag)
	})
	require.Zero(t, metric(t, reg, "afterok_relay_lag_events"))
	require.ErrorIs(t, relay.stop(), context.Canceled, "Run returns only when its context ends")
}

// TestRelayWakesOnAppendAndPolls: appends through the relay's Store wake it
// (with a poll interval of an hour nothing else would), appends by another
// process are found by the poll.
//
// The tail holds back events that committed after any still-open writing
// transaction began, in any database of the cluster, so the read a wake-up
// triggers may not show the new event yet. The test therefore appends again
// while it waits: each append is another wake-up, and the first read that
// sees past the horizon relays them all.
func TestRelayWakesOnAppendAndPolls(t *testing.T) {
	for _, c := range []struct {
		name  string
		poll  time.Duration
		other bool
	}{
		{"same process wakes it", time.Hour, false},
		{"other process is polled", 20 * time.Millisecond, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			g := newRelayRig(t)
			_, err := g.store.Append(ctx, "order-1", eventstore.NoStream, ev("First", 1))
			require.NoError(t, err)
			cfg := g.config(nil)
			cfg.Poll = c.poll
			g.start(cfg)
			// No wait for "First" here: the relay's opening read can come
			// while the horizon is held back, and with an hour's poll only a
			// wake-up brings it back. The appends below are those wake-ups;
			// the checkpoint reaching the last of them covers "First" too.
			appender := g.store
			if c.other {
				appender = eventstore.New(g.db.Pool) // its commits do not signal the relay's Store
			}
			// Generous: a transaction elsewhere on a shared server holds the
			// tail's horizon (and so every wake-up's read) back meanwhile.
			deadline := time.Now().Add(60 * time.Second)
			for v := 1; ; v++ {
				e := withID(ev("Next", v))
				_, err = appender.Append(ctx, "order-1", eventstore.Exact(v), e)
				require.NoError(t, err)
				var at eventstore.Cursor
				require.NoError(t, g.db.Pool.QueryRow(ctx, `SELECT xid, global_position FROM events WHERE event_id = $1`, e.ID).
					Scan(&at.XID, &at.Position))
				relayed := func() bool {
					cp, err := eventstore.Checkpoint(ctx, g.db.Pool, "relay")
					return err == nil && cp == at
				}
				waitUntil := time.Now().Add(time.Second)
				for !relayed() && time.Now().Before(waitUntil) {
					time.Sleep(5 * time.Millisecond) // polling the checkpoint
				}
				if relayed() {
					break
				}
				require.True(t, time.Now().Before(deadline), "appends never woke the relay")
			}
			g.requireStreamIsTail(g.tail())
		})
	}
}

// TestRelayWritesCheckpointOnShutdown: with no periodic checkpoint, the
// only write is the one on the way out, after the acks of what was sent.
func TestRelayWritesCheckpointOnShutdown(t *testing.T) {
	ctx := context.Background()
	g := newRelayRig(t)
	for i := range 40 {
		_, err := g.store.Append(ctx, fmt.Sprintf("order-%d", i%3), eventstore.Any, ev("OrderAccepted", i))
		require.NoError(t, err)
	}
	tail := g.tail()
	cfg := g.config(nil)
	cfg.CheckpointInterval = time.Hour
	relay := g.start(cfg)
	storetest.Poll(t, 30*time.Second, func() (bool, string) {
		return g.streamCount() == uint64(len(tail)), fmt.Sprintf("%d in the stream, want %d", g.streamCount(), len(tail))
	})
	cp, err := eventstore.Checkpoint(ctx, g.db.Pool, "relay")
	require.NoError(t, err)
	require.Equal(t, eventstore.Cursor{}, cp)
	require.ErrorIs(t, relay.stop(), context.Canceled)
	cp, err = eventstore.Checkpoint(ctx, g.db.Pool, "relay")
	require.NoError(t, err)
	require.Equal(t, tail[len(tail)-1].Cursor(), cp)
}

// appendEvents appends one to three events to one to three of the writer's
// streams per append until stop closes, retrying a failed append with the
// same event ids (a retry of an append that did commit is recognised as
// such), and returns how many appends it made. hold, if set, runs inside
// the transaction after the append.
func appendEvents(t *testing.T, s *eventstore.Store, writer int, stop <-chan struct{}, max int, hold func(ctx context.Context, tx *eventstore.Tx) error) int {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(uint64(writer), 42))
	versions := map[string]int{}
	n := 0
	for ; n < max; n++ {
		select {
		case <-stop:
			return n
		default:
		}
		var batch []eventstore.StreamAppend
		used := map[string]bool{}
		for range 1 + rng.IntN(3) {
			stream := fmt.Sprintf("message-w%d%d", writer, rng.IntN(5))
			if used[stream] {
				continue
			}
			used[stream] = true
			var evs []eventstore.EventData
			for range 1 + rng.IntN(3) {
				e := withID(ev("MessageQueued", n))
				e.Metadata.AccountID = fmt.Sprintf("acc%d", writer%2)
				evs = append(evs, e)
			}
			batch = append(batch, eventstore.StreamAppend{Stream: stream, Expected: eventstore.Exact(versions[stream]), Events: evs})
		}
		for i := range batch {
			if batch[i].Expected == eventstore.Exact(0) {
				batch[i].Expected = eventstore.NoStream
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := s.InTx(ctx, func(tx *eventstore.Tx) error {
				if _, err := tx.Append(ctx, batch...); err != nil {
					return err
				}
				if hold != nil {
					return hold(ctx, tx)
				}
				return nil
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("writer %d: append failing for 30s: %v", writer, err)
				return n
			}
		}
		for _, a := range batch {
			versions[a.Stream] += len(a.Events)
		}
	}
	return n
}

func TestRelayUnderConcurrentAppenders(t *testing.T) {
	g := newRelayRig(t)
	reg := prometheus.NewRegistry()
	g.start(g.config(reg))
	const writers, appends = 6, 40
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			appendEvents(t, g.store, w, nil, appends, func(ctx context.Context, tx *eventstore.Tx) error {
				if w%3 != 0 {
					return nil
				}
				// Hold the transaction open a moment: the tail must wait for it.
				_, err := tx.Exec(ctx, `SELECT pg_sleep(0.005)`)
				return err
			})
		})
	}
	wg.Wait()
	tail := g.tail()
	g.waitCheckpoint("relay", tail, 60*time.Second)
	g.requireStreamIsTail(tail)
	require.Equal(t, float64(len(tail)), metric(t, reg, "afterok_relay_events_published_total", "result", "stored"))
}

func TestNewRelayRefusesIncompleteConfig(t *testing.T) {
	_, err := eventstore.NewRelay(eventstore.RelayConfig{})
	require.Error(t, err)
}
