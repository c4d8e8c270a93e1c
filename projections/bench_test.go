package projections_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/projections"
)

// loadGen writes what the pipeline writes, in the pipeline's batches: an
// order of batch messages in one transaction, then each lifecycle step for
// all of them in one transaction, then the order's settlement. It keeps the
// aggregates in memory (one account per generator, so generators never
// conflict) and appends with exact expected versions.
type loadGen struct {
	store   *eventstore.Store
	account domain.Account
	version int
	now     func() time.Time
}

func newLoadGen(ctx context.Context, b testing.TB, store *eventstore.Store) *loadGen {
	id := ulid.Make().String()
	g := &loadGen{store: store, now: time.Now}
	at := g.now()
	opened, _ := domain.OpenAccount(id, "bench", "EUR", nil, at)
	_ = g.account.Apply(opened)
	credited, _ := g.account.Credit(domain.Money{AmountMicros: math.MaxInt64 / 4, Currency: "EUR"}, "bench", at)
	_ = g.account.Apply(credited)
	md := eventstore.Metadata{AccountID: id, CorrelationID: id}
	if _, err := store.Append(ctx, domain.AccountStream(id), eventstore.NoStream, eventstore.MustEvent(opened, md), eventstore.MustEvent(credited, md)); err != nil {
		b.Fatal(err)
	}
	g.version = 2
	return g
}

// order runs one order of n messages through its whole life and returns
// the number of events appended. Every 50th message fails on the route.
func (g *loadGen) order(ctx context.Context, n int) (int, error) {
	at := g.now()
	orderID := ulid.Make().String()
	acct := g.account.ID
	md := eventstore.Metadata{AccountID: acct, CorrelationID: orderID, Actor: "bench"}
	price := domain.Money{AmountMicros: 75_000, Currency: "EUR"}
	total := domain.Money{AmountMicros: 75_000 * int64(n), Currency: "EUR"}
	reserved, err := g.account.Reserve(orderID, total, n, at)
	if err != nil {
		return 0, err
	}
	_ = g.account.Apply(reserved)
	batch := []eventstore.StreamAppend{
		{Stream: domain.OrderStream(orderID), Expected: eventstore.NoStream, Events: []eventstore.EventData{eventstore.MustEvent(
			domain.OrderAccepted{OrderID: orderID, AccountID: acct, MessageCount: n, Price: total, ValiditySeconds: 3600, ExpiresAt: at.Add(time.Hour), At: at}, md)}},
		{Stream: domain.AccountStream(acct), Expected: eventstore.Exact(g.version), Events: []eventstore.EventData{eventstore.MustEvent(reserved, md)}},
	}
	g.version++
	msgs := make([]domain.Message, n)
	for i := range msgs {
		id := ulid.Make().String()
		e := domain.MessageAccepted{MessageID: id, OrderID: orderID, AccountID: acct, Index: i, To: fmt.Sprintf("+49151%08d", i),
			Country: "DE", Body: "Your code is 123456", Encoding: "gsm7", Segments: 1, Price: price, ExpiresAt: at.Add(time.Hour), At: at}
		_ = msgs[i].Apply(e)
		batch = append(batch, eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(e, md)}})
	}
	if _, err := g.store.AppendMulti(ctx, batch); err != nil {
		return 0, err
	}
	events := len(batch)
	steps := []func(m *domain.Message, i int, at time.Time) (domain.Event, error){
		func(m *domain.Message, _ int, at time.Time) (domain.Event, error) { return m.Queue("", at) },
		func(m *domain.Message, i int, at time.Time) (domain.Event, error) {
			if i%50 == 49 {
				return m.Fail(m.Attempt, domain.Failure{Code: domain.CodeRejected, Stage: domain.StageSubmit, Provider: "sim-b"}, nil, at)
			}
			return m.Route(domain.RouteDecision{RouteID: "de", Provider: "sim-a", Reason: "priority"}, at)
		},
		func(m *domain.Message, _ int, at time.Time) (domain.Event, error) {
			return m.Submit("p-"+m.ID, 30*time.Millisecond, at)
		},
		func(m *domain.Message, _ int, at time.Time) (domain.Event, error) {
			return m.Deliver(m.Attempt, nil, at, at)
		},
	}
	for _, step := range steps {
		at := g.now()
		var batch []eventstore.StreamAppend
		for i := range msgs {
			m := &msgs[i]
			if m.State.Final() {
				continue
			}
			ev, err := step(m, i, at)
			if err != nil {
				return events, err
			}
			batch = append(batch, eventstore.StreamAppend{Stream: domain.MessageStream(m.ID), Expected: eventstore.Exact(m.Version),
				Events: []eventstore.EventData{eventstore.MustEvent(ev, md)}})
			_ = m.Apply(ev)
		}
		if _, err := g.store.AppendMulti(ctx, batch); err != nil {
			return events, err
		}
		events += len(batch)
	}
	var delivered, failed []string
	for _, m := range msgs {
		if m.State == domain.StateDelivered {
			delivered = append(delivered, m.ID)
		} else {
			failed = append(failed, m.ID)
		}
	}
	at = g.now()
	charged := domain.Money{AmountMicros: 75_000 * int64(len(delivered)), Currency: "EUR"}
	refunded := domain.Money{AmountMicros: 75_000 * int64(len(failed)), Currency: "EUR"}
	money := []eventstore.EventData{}
	if len(delivered) > 0 {
		e, _ := g.account.Charge(orderID, charged, delivered, at)
		_ = g.account.Apply(e)
		money = append(money, eventstore.MustEvent(e, md))
	}
	if len(failed) > 0 {
		e, _ := g.account.Release(orderID, refunded, failed, "failed", at)
		_ = g.account.Apply(e)
		money = append(money, eventstore.MustEvent(e, md))
	}
	_, err = g.store.AppendMulti(ctx, []eventstore.StreamAppend{
		{Stream: domain.OrderStream(orderID), Expected: eventstore.Exact(1), Events: []eventstore.EventData{eventstore.MustEvent(
			domain.OrderCompleted{Counts: domain.OrderCounts{Delivered: len(delivered), Failed: len(failed)}, Charged: charged, Refunded: refunded, At: at}, md)}},
		{Stream: domain.AccountStream(acct), Expected: eventstore.Exact(g.version), Events: money},
	})
	g.version += len(money)
	return events + 1 + len(money), err
}

// BenchmarkProjectionThroughput applies a pipeline-shaped history (orders
// of 100 messages, every step of every message) from position zero, the
// way the live runner does (batches of 1,000, checkpoint in the same
// transaction) and the way a rebuild does, and reports events/s applied
// next to the baseline measured in the same run: reading the same events
// from the gap-safe tail, without applying them, which no projector can
// beat.
func BenchmarkProjectionThroughput(b *testing.B) {
	ctx := context.Background()
	f := newFixture(b)
	g := newLoadGen(ctx, b, f.store)
	const orders, size = 50, 100 // 5,000 messages, ~26,000 events
	total := 0
	for range orders {
		n, err := g.order(ctx, size)
		if err != nil {
			b.Fatal(err)
		}
		total += n
	}
	p, _ := projections.Lookup("messages")
	storetest.Poll(b, time.Minute, func() (bool, string) { // visible to the tail
		evs, _, _ := f.store.ReadAll(ctx, eventstore.Cursor{}, total+100, eventstore.Filter{})
		return len(evs) >= total, "waiting for the tail"
	})
	reset := func() {
		for _, t := range []string{"read_messages", "read_orders", "read_provider_stats", "read_provider_failures", "read_accounts"} {
			if _, err := f.db.Pool.Exec(ctx, "TRUNCATE "+t); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := f.db.Pool.Exec(ctx, "DELETE FROM checkpoints"); err != nil {
			b.Fatal(err)
		}
	}
	var readTime, liveTime, rebuildTime time.Duration
	var applied, rebuilt int64
	for b.Loop() {
		// Baseline: read the projection's events off the tail.
		start := time.Now()
		var c eventstore.Cursor
		for {
			evs, next, err := f.store.ReadAll(ctx, c, 1000, eventstore.Filter{Types: p.Types})
			if err != nil {
				b.Fatal(err)
			}
			if len(evs) == 0 && next == c {
				break
			}
			c = next
		}
		readTime += time.Since(start)

		// The live path: Step with the projection's consumer until the tail is empty.
		reset()
		consumer := eventstore.Consumer{Name: p.Checkpoint(), Filter: eventstore.Filter{Types: p.Types}, BatchSize: 1000,
			Poll: time.Millisecond, Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
				return p.Apply(ctx, tx.Tx, batch)
			}}
		start = time.Now()
		c = eventstore.Cursor{}
		for {
			next, n, err := f.store.Step(ctx, consumer, c)
			if err != nil {
				b.Fatal(err)
			}
			applied += int64(n)
			if n == 0 && next == c {
				break
			}
			c = next
		}
		liveTime += time.Since(start)

		// A rebuild: the same apply code in batches of 5,000, indexes after.
		start = time.Now()
		rep, err := projections.Rebuild(ctx, f.db.Pool, "messages", nil)
		if err != nil {
			b.Fatal(err)
		}
		rebuildTime += time.Since(start)
		rebuilt += rep.Events
	}
	live := float64(applied) / liveTime.Seconds()
	read := float64(applied) / readTime.Seconds()
	b.ReportMetric(live, "events/s")
	b.ReportMetric(float64(rebuilt)/rebuildTime.Seconds(), "rebuild-events/s")
	b.ReportMetric(read, "baseline-tail-read-events/s")
	b.ReportMetric(live/read, "fraction-of-baseline")
}

// BenchmarkProjectionLag appends a pipeline-shaped load at a fixed rate of
// messages per second for 15 s while the runner projects it, and reports
// the projection delay (append to applied, per event) the runner's
// afterok_projection_delay_seconds histogram recorded, at p50 and p99
// (interpolated within buckets, as histogram_quantile does), next to the
// rate actually appended.
func BenchmarkProjectionLag(b *testing.B) {
	for _, rate := range []int{1000, 2500, 5000} {
		b.Run(fmt.Sprintf("msgs=%d/s", rate), func(b *testing.B) {
			for b.Loop() {
				benchLag(b, rate, 15*time.Second)
			}
		})
	}
}

func benchLag(b *testing.B, rate int, d time.Duration) {
	ctx := context.Background()
	f := newFixture(b)
	reg := prometheus.NewRegistry()
	stop := f.start(projections.Config{Registerer: reg, Poll: 20 * time.Millisecond})
	const size, writers = 100, 4
	var mu sync.Mutex
	var events, messages int
	var wg sync.WaitGroup
	deadline := time.Now().Add(d)
	perWriter := time.Duration(float64(time.Second) * float64(size*writers) / float64(rate)) // one order per writer per tick
	for range writers {
		g := newLoadGen(ctx, b, f.store)
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.NewTicker(perWriter)
			defer t.Stop()
			for time.Now().Before(deadline) {
				n, err := g.order(ctx, size)
				if err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				events += n
				messages += size
				mu.Unlock()
				<-t.C
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	elapsed := time.Since(start)
	f.caughtUp()
	drained := time.Since(start) - elapsed
	stop()
	p50, p99 := delayQuantiles(b, reg)
	b.ReportMetric(float64(messages)/elapsed.Seconds(), "msgs/s-appended")
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s-appended")
	b.ReportMetric(p50, "lag-p50-s")
	b.ReportMetric(p99, "lag-p99-s")
	b.ReportMetric(drained.Seconds(), "drain-s")
}

// delayQuantiles reads the messages projection's delay histogram.
func delayQuantiles(b *testing.B, reg *prometheus.Registry) (float64, float64) {
	families, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	type bucket struct{ le, n float64 }
	var buckets []bucket
	var count float64
	for _, fam := range families {
		if fam.GetName() != "afterok_projection_delay_seconds" {
			continue
		}
		for _, m := range fam.GetMetric() {
			if m.GetLabel()[0].GetValue() != "messages" {
				continue
			}
			h := m.GetHistogram()
			count = float64(h.GetSampleCount())
			for _, bk := range h.GetBucket() {
				buckets = append(buckets, bucket{bk.GetUpperBound(), float64(bk.GetCumulativeCount())})
			}
		}
	}
	sort.Slice(buckets, func(i, j int) bool { return buckets[i].le < buckets[j].le })
	q := func(q float64) float64 {
		rank := q * count
		lo, prev := 0.0, 0.0
		for _, bk := range buckets {
			if bk.n >= rank {
				if bk.n == prev {
					return bk.le
				}
				return lo + (bk.le-lo)*(rank-prev)/(bk.n-prev)
			}
			lo, prev = bk.le, bk.n
		}
		return math.Inf(1)
	}
	return q(0.5), q(0.99)
}
