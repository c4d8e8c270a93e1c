package eventstore_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

// messageEvent is a realistic MessageAccepted payload (the bulk of what an
// order appends).
func messageEvent(orderID string, i int) eventstore.EventData {
	id := ulid.Make().String()
	return eventstore.MustEvent(domain.MessageAccepted{
		MessageID: id, OrderID: orderID, AccountID: "01JACCOUNT0000000000000000", Index: i,
		To: fmt.Sprintf("+49151%08d", i), Country: "DE", Body: "Your verification code is 123456. It expires in 10 minutes.",
		Encoding: "gsm7", Segments: 1, Price: domain.Money{AmountMicros: 75000, Currency: "EUR"},
		ExpiresAt: time.Now().Add(24 * time.Hour), At: time.Now(),
	}, eventstore.Metadata{AccountID: "01JACCOUNT0000000000000000", CorrelationID: orderID, Actor: "key_bench"})
}

// copyBaseline is the limit an append is held against: a raw COPY of rows
// shaped like the appended ones (hashes precomputed, no streams table, no
// checks) into a scratch table with the events table's columns, defaults
// and indexes.
func copyBaseline(ctx context.Context, b *testing.B, db *storetest.DB, rows [][]any) time.Duration {
	b.Helper()
	start := time.Now()
	_, err := db.Pool.CopyFrom(ctx, pgx.Identifier{"events_baseline"}, []string{"stream_id", "stream_version", "event_id",
		"type", "schema_version", "account_id", "data", "metadata", "recorded_at", "prev_hash", "hash"}, pgx.CopyFromRows(rows))
	if err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}

func baselineRows(evs []eventstore.EventData) [][]any {
	rows := make([][]any, len(evs))
	h := sha256.Sum256([]byte("x"))
	now := time.Now()
	for i, e := range evs {
		rows[i] = []any{"message-" + e.ID.String(), 1, uuid.Must(uuid.NewV7()), e.Type, 1, e.Metadata.AccountID,
			e.Data, []byte(`{"actor":"key_bench","account_id":"01JACCOUNT0000000000000000"}`), now, h[:], h[:]}
	}
	return rows
}

func benchDB(b *testing.B) *storetest.DB {
	db := storetest.NewDBWith(b, eventstore.PoolConfig{MaxConns: 16})
	if _, err := db.Pool.Exec(context.Background(), `CREATE TABLE events_baseline (LIKE events INCLUDING ALL)`); err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkAppendBulk appends 10,000 single-event streams in one atomic
// append (an order of 10,000 messages) and, in the same run, COPYs the same
// number of rows raw into a scratch copy of the events table.
func BenchmarkAppendBulk(b *testing.B) {
	const n = 10_000
	ctx := context.Background()
	db := benchDB(b)
	s := eventstore.New(db.Pool)
	var appendTime, copyTime time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		order := ulid.Make().String()
		batch := make([]eventstore.StreamAppend, n)
		evs := make([]eventstore.EventData, n)
		for j := range batch {
			evs[j] = messageEvent(order, j)
			batch[j] = eventstore.StreamAppend{Stream: "message-" + ulid.Make().String(), Expected: eventstore.NoStream,
				Events: []eventstore.EventData{evs[j]}}
		}
		rows := baselineRows(evs)
		runtime.GC()
		b.StartTimer()
		start := time.Now()
		if _, err := s.AppendMulti(ctx, batch); err != nil {
			b.Fatal(err)
		}
		appendTime += time.Since(start)
		b.StopTimer()
		copyTime += copyBaseline(ctx, b, db, rows)
		b.StartTimer()
	}
	appendRate := float64(n*b.N) / appendTime.Seconds()
	copyRate := float64(n*b.N) / copyTime.Seconds()
	b.ReportMetric(appendRate, "events/s")
	b.ReportMetric(copyRate, "copy-events/s")
	b.ReportMetric(appendRate/copyRate, "ratio-to-copy")
}

// BenchmarkAppendConcurrent appends one event at a time to existing streams
// (expected version checked) from 8 goroutines, beside the same raw COPY
// baseline.
func BenchmarkAppendConcurrent(b *testing.B) {
	const writers, perWriter = 8, 250
	ctx := context.Background()
	db := benchDB(b)
	s := eventstore.New(db.Pool)
	var appendTime, copyTime time.Duration
	for i := 0; i < b.N; i++ {
		var wg sync.WaitGroup
		start := time.Now()
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				stream := fmt.Sprintf("bench-%d-%d", i, w)
				for v := range perWriter {
					if _, err := s.Append(ctx, stream, eventstore.Exact(v), messageEvent("o", v)); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		appendTime += time.Since(start)
		b.StopTimer()
		evs := make([]eventstore.EventData, writers*perWriter)
		for j := range evs {
			evs[j] = messageEvent("o", j)
		}
		copyTime += copyBaseline(ctx, b, db, baselineRows(evs))
		b.StartTimer()
	}
	total := float64(writers * perWriter * b.N)
	b.ReportMetric(total/appendTime.Seconds(), "events/s")
	b.ReportMetric(total/copyTime.Seconds(), "copy-events/s")
	b.ReportMetric((total/appendTime.Seconds())/(total/copyTime.Seconds()), "ratio-to-copy")
}

// BenchmarkAppendWorkerBatches appends as the workers do: batches of 100
// message streams, each at its exact version with one event (queued,
// routed, submitted, delivered), from 4 goroutines over their own streams.
// It reports the events/s and the statements sent per batch.
func BenchmarkAppendWorkerBatches(b *testing.B) {
	const writers, streams, rounds = 4, 100, 20
	ctx := context.Background()
	db := benchDB(b)
	s := eventstore.New(db.Pool)
	var elapsed time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		batches := make([][]eventstore.StreamAppend, writers)
		for w := range writers {
			create := make([]eventstore.StreamAppend, streams)
			for j := range create {
				create[j] = eventstore.StreamAppend{Stream: fmt.Sprintf("message-%d-%d-%d", i, w, j), Expected: eventstore.NoStream,
					Events: []eventstore.EventData{messageEvent("o", j)}}
			}
			if _, err := s.AppendMulti(ctx, create); err != nil {
				b.Fatal(err)
			}
			batches[w] = create
		}
		b.StartTimer()
		start := time.Now()
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for v := 1; v <= rounds; v++ {
					batch := make([]eventstore.StreamAppend, streams)
					for j, a := range batches[w] {
						batch[j] = eventstore.StreamAppend{Stream: a.Stream, Expected: eventstore.Exact(v),
							Events: []eventstore.EventData{messageEvent("o", v)}}
					}
					if _, err := s.AppendMulti(ctx, batch); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		elapsed += time.Since(start)
	}
	b.ReportMetric(float64(writers*streams*rounds*b.N)/elapsed.Seconds(), "events/s")
}
