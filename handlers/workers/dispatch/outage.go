package dispatch

import (
	"context"
	"time"

	"github.com/afterok/afterok/eventstore"
)

// An outage of PostgreSQL (a restart, a managed failover: 15–60 s) must
// cost the messages in flight time, not their deliveries. These helpers let
// a worker tell "the store is away" from "this batch is at fault", and wait
// the first out with its jobs held.

// storeReachable reports whether the store answers a ping within a couple
// of seconds. A batch error while it answers is the batch's own.
func (w *Worker) storeReachable(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return w.cfg.Store.Pool().Ping(ctx) == nil
}

// waitForStore probes the store with exponential backoff (100 ms doubling
// to 5 s) until it answers, meanwhile telling JetStream that the held jobs
// are in progress, so that AckWait does not hand them out again (which
// would spend a delivery each). It reports false when ctx ended first.
// During an outage of NATS too, the in-progress signals fail and the jobs
// come back after AckWait: one delivery spent, never more.
func (w *Worker) waitForStore(ctx context.Context, tasks []*task) bool {
	backoff := 100 * time.Millisecond
	lastSignal := time.Now()
	for {
		if eventstore.Sleep(ctx, backoff); ctx.Err() != nil {
			return false
		}
		if w.storeReachable(ctx) {
			w.log.Info("store reachable again; running the held batch", "jobs", len(tasks))
			return true
		}
		if time.Since(lastSignal) >= w.cfg.AckWait/3 {
			for _, t := range tasks {
				_ = t.msg.InProgress()
			}
			lastSignal = time.Now()
		}
		backoff = min(2*backoff, 5*time.Second, w.cfg.AckWait/3)
	}
}
