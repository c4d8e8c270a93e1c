package eventstore_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/storetest"
)

// BenchmarkRelay drains a backlog of 20,000 MessageAccepted events (an
// order's worth of realistic payloads) from the store into JetStream: from
// Run's start until the checkpoint covers the last event. The baseline, in
// the same run and against the same server, is raw PublishMsgAsync of the
// very same messages (subject, headers and body; no ordering header) into
// streams of their own with the same in-flight window: what publishing
// costs without the store, the tail reads and the checkpoint.
func BenchmarkRelay(b *testing.B) {
	for _, inFlight := range []int{256, 1024, 4000} {
		b.Run(fmt.Sprintf("inflight=%d", inFlight), func(b *testing.B) { benchmarkRelay(b, inFlight) })
	}
}

func benchmarkRelay(b *testing.B, inFlight int) {
	const n = 20_000
	ctx := context.Background()
	db := storetest.NewDBWith(b, eventstore.PoolConfig{MaxConns: 8})
	s := eventstore.New(db.Pool)
	nt := storetest.NewNATS(b)
	raw := bus.Names{Prefix: nt.Names.Prefix + "raw"}
	if err := bus.EnsureStreams(ctx, nt.JS, raw, bus.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = nt.JS.DeleteStream(context.Background(), raw.EventsStream())
		_ = nt.JS.DeleteStream(context.Background(), raw.DispatchStream())
	})
	base := eventstore.RelayConfig{Store: s, JetStream: nt.JS, Names: nt.Names, MaxInFlight: inFlight,
		// A short interval so that the end is seen within 5 ms; the
		// default (200 ms) would only write fewer rows.
		CheckpointInterval: 5 * time.Millisecond,
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil))}

	var relayTime, rawTime time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		from, end, msgs := backlog(b, s, base, n)
		reached := make(chan struct{})
		var once sync.Once
		cfg := eventstore.WithBeforeCheckpoint(base, func(to eventstore.Cursor) error {
			if to == end {
				once.Do(func() { close(reached) })
			}
			return nil
		})
		r, err := eventstore.NewRelay(cfg)
		if err != nil {
			b.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		b.StartTimer()
		start := time.Now()
		go func() { done <- r.Run(runCtx) }()
		select {
		case <-reached:
		case <-time.After(2 * time.Minute):
			b.Fatalf("relay did not reach %s from %s", end, from)
		}
		relayTime += time.Since(start)
		b.StopTimer()
		stop()
		<-done

		for _, m := range msgs {
			m.Subject = raw.Prefix + strings.TrimPrefix(m.Subject, nt.Names.Prefix)
		}
		rawTime += publishRaw(b, nt.JS, msgs, inFlight)
		b.StartTimer()
	}
	relayRate := float64(n*b.N) / relayTime.Seconds()
	rawRate := float64(n*b.N) / rawTime.Seconds()
	b.ReportMetric(relayRate, "events/s")
	b.ReportMetric(rawRate, "raw-publish-events/s")
	b.ReportMetric(relayRate/rawRate, "ratio-to-raw")
}

// backlog appends n single-event message streams and returns the tail
// before and after them, and the messages the relay will publish.
func backlog(b *testing.B, s *eventstore.Store, cfg eventstore.RelayConfig, n int) (from, end eventstore.Cursor, msgs []*nats.Msg) {
	ctx := context.Background()
	from = tailEnd(b, s)
	order := ulid.Make().String()
	for done := 0; done < n; done += 10_000 {
		batch := make([]eventstore.StreamAppend, min(10_000, n-done))
		for j := range batch {
			batch[j] = eventstore.StreamAppend{Stream: "message-" + ulid.Make().String(), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{messageEvent(order, done+j)}}
		}
		if _, err := s.AppendMulti(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	// The tail may hold the events back a moment (autoanalyze of the
	// fresh rows runs a transaction that precedes them).
	var evs []eventstore.RecordedEvent
	deadline := time.Now().Add(time.Minute)
	for len(evs) != n {
		var err error
		if evs, end, err = s.ReadAll(ctx, from, n+1, eventstore.Filter{}); err != nil || time.Now().After(deadline) {
			b.Fatalf("backlog: %d of %d events in the tail, %v", len(evs), n, err)
		}
	}
	for i := range evs {
		m, err := eventstore.RelayMessage(cfg, &evs[i], "")
		if err != nil {
			b.Fatal(err)
		}
		msgs = append(msgs, m)
	}
	return from, end, msgs
}

func tailEnd(b *testing.B, s *eventstore.Store) eventstore.Cursor {
	c := eventstore.Cursor{}
	for {
		evs, next, err := s.ReadAll(context.Background(), c, 10_000, eventstore.Filter{})
		if err != nil {
			b.Fatal(err)
		}
		if len(evs) == 0 {
			return next
		}
		c = next
	}
}

// publishRaw publishes msgs asynchronously with at most inFlight
// unacknowledged and returns when every ack has arrived.
func publishRaw(b *testing.B, js jetstream.JetStream, msgs []*nats.Msg, inFlight int) time.Duration {
	futures := make(chan jetstream.PubAckFuture, inFlight)
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				errs <- err
				for range futures {
				}
				return
			}
		}
	}()
	start := time.Now()
	for _, m := range msgs {
		f, err := js.PublishMsgAsync(m)
		if err != nil {
			b.Fatal(err)
		}
		futures <- f
	}
	close(futures)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
