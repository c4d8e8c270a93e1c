package sim

import (
	"testing"
	"time"
)

func TestBatcher(t *testing.T) {
	a, b := &providerState{name: "sim-a"}, &providerState{name: "sim-b"}
	bt := &batcher{size: 3, flush: time.Second, open: map[*providerState]*openBatch{}}
	now := time.Unix(1_750_000_000, 0)
	msg := func(p *providerState, parts int) pendingReceipt {
		return pendingReceipt{provider: p, id: "x", reference: "r", attempt: 1, status: "delivered", parts: parts, due: now}
	}
	bt.add(now, msg(a, 2))
	bt.add(now, msg(b, 1))
	bt.ready(now)
	if len(bt.backlog) != 0 {
		t.Fatalf("emitted %d batches before any was full or due", len(bt.backlog))
	}
	if next, ok := bt.nextFlush(); !ok || !next.Equal(now.Add(time.Second)) {
		t.Fatalf("next flush %v %v, want %v", next, ok, now.Add(time.Second))
	}
	bt.add(now.Add(10*time.Millisecond), msg(a, 5)) // sim-a now holds 7 receipts
	bt.ready(now.Add(10 * time.Millisecond))
	if len(bt.backlog) != 2 || len(bt.backlog[0].receipts) != 3 || len(bt.backlog[1].receipts) != 3 {
		t.Fatalf("backlog %+v, want two full batches of sim-a", bt.backlog)
	}
	bt.backlog = nil
	bt.ready(now.Add(time.Second))
	got := map[string]int{}
	for _, rb := range bt.backlog {
		got[rb.provider.name] += len(rb.receipts)
	}
	if len(bt.backlog) != 2 || got["sim-a"] != 1 || got["sim-b"] != 1 {
		t.Fatalf("after the flush deadline: %v in %d batches, want one receipt each for sim-a and sim-b", got, len(bt.backlog))
	}
	if _, ok := bt.nextFlush(); ok {
		t.Fatal("a flush is pending with nothing open")
	}
}
