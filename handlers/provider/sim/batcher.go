package sim

import "time"

// batcher groups due receipts per provider into callback-sized batches. It
// belongs to Run's collector goroutine and is not safe for concurrent use.
type batcher struct {
	size  int
	flush time.Duration
	open  map[*providerState]*openBatch
	// head is the next queued receipt, taken off the queue but not yet due.
	head *pendingReceipt
	// backlog holds complete batches not yet handed to a worker.
	backlog []receiptBatch
}

type openBatch struct {
	receipts []wireReceipt
	deadline time.Time // when it goes out even if not full
}

func (b *batcher) add(now time.Time, r pendingReceipt) {
	ob := b.open[r.provider]
	if ob == nil {
		ob = &openBatch{}
		b.open[r.provider] = ob
	}
	if len(ob.receipts) == 0 {
		ob.deadline = now.Add(b.flush)
	}
	ob.receipts = append(ob.receipts, r.receipts(now)...)
}

// ready moves full batches, and those whose deadline has passed, to backlog.
func (b *batcher) ready(now time.Time) {
	for p, ob := range b.open {
		for len(ob.receipts) >= b.size {
			b.backlog = append(b.backlog, receiptBatch{provider: p, receipts: ob.receipts[:b.size:b.size]})
			ob.receipts = ob.receipts[b.size:]
		}
		if len(ob.receipts) > 0 && !ob.deadline.After(now) {
			b.backlog = append(b.backlog, receiptBatch{provider: p, receipts: ob.receipts})
			ob.receipts = nil
		}
		if len(ob.receipts) == 0 {
			ob.receipts = nil // do not keep a large array alive for an idle provider
		}
	}
}

// nextFlush returns the earliest deadline of a non-empty batch.
func (b *batcher) nextFlush() (time.Time, bool) {
	var next time.Time
	found := false
	for _, ob := range b.open {
		if len(ob.receipts) > 0 && (!found || ob.deadline.Before(next)) {
			next, found = ob.deadline, true
		}
	}
	return next, found
}

// flushAll moves everything to backlog, in batches of at most size.
func (b *batcher) flushAll() {
	for p, ob := range b.open {
		for len(ob.receipts) > 0 {
			n := min(b.size, len(ob.receipts))
			b.backlog = append(b.backlog, receiptBatch{provider: p, receipts: ob.receipts[:n:n]})
			ob.receipts = ob.receipts[n:]
		}
		ob.receipts = nil
	}
}
