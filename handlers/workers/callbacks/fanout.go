package callbacks

import (
	"context"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// promoteAfterFanOut closes the race of the ready rule without a lock:
// a fan-out that saw a pair's delivery still owed inserts its new row
// waiting, and a recorder that finished that delivery meanwhile, with a
// snapshot from before the fan-out committed, did not see the new row to
// make it ready. So once the fan-out has committed, the pairs it left
// waiting are checked again, and once more after the next batch; what
// still slips through is caught by the orphan check.
func (d *Deliverer) promoteAfterFanOut() {
	// The pairs of this batch, and again those of the one before: a
	// recorder that was still in flight at the first check has most
	// likely committed by the second.
	check := append(d.waiting, d.waitedBefore...)
	d.waitedBefore = append(d.waitedBefore[:0], d.waiting...)
	if len(check) == 0 {
		return
	}
	hooks, streams := make([]string, len(check)), make([]string, len(check))
	for i, k := range check {
		hooks[i], streams[i] = k[0], k[1]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := d.cfg.Store.Pool().Exec(ctx, promoteSQL, hooks, streams); err != nil {
		d.log.Warn("webhook deliveries: promote after fan-out", "err", err) // the orphan check will
	}
}

// fanOut is the consumer that owes deliveries. It is partitioned by
// stream (the default key), so one stream's events are fanned out in
// order, and its deliveries commit with its checkpoint.
func (d *Deliverer) fanOut() eventstore.Consumer {
	return eventstore.Consumer{
		// Batches of up to 2,000 events: the fan-out's cost is per batch
		// (a tail read, two statements, a commit) far more than per event,
		// and under load a smaller batch fell behind the tail.
		Name: "webhooks", BatchSize: 4 * d.cfg.BatchSize, Logger: d.log, Linger: 5 * time.Millisecond,
		Filter: eventstore.Filter{Types: domain.WebhookEventTypes()},
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			_, err := d.fanOutBatch(ctx, tx, batch)
			return err
		},
		Committed: func([]eventstore.RecordedEvent) {
			d.afterDirect()
			d.promoteAfterFanOut()
			d.Wake()
		},
	}
}
