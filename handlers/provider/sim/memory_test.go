package sim

import (
	"strconv"
	"testing"
	"time"
)

func sub(key, ref string, attempt int) submission {
	return submission{idempotencyKey: key, reference: ref, attempt: attempt, to: "+4915112340000", body: "hi", segments: 1}
}

func TestMemoryForgetsAfterWindow(t *testing.T) {
	m := newMemory(time.Minute)
	t0 := time.Unix(1_750_000_000, 0)
	if _, v := m.claim(t0, "sim-a", sub("m1:1", "m1", 1), outcomeDelivered, "id-1"); v != verdictAccepted {
		t.Fatalf("first claim: %v", v)
	}
	if a, v := m.claim(t0.Add(59*time.Second), "sim-a", sub("m1:1", "m1", 1), outcomeDelivered, "id-2"); v != verdictReplay || a.id != "id-1" {
		t.Fatalf("inside the window: %v %+v, want a replay of id-1", v, a)
	}
	if _, v := m.claim(t0.Add(59*time.Second), "sim-a", sub("other", "m1", 1), outcomeDelivered, "id-3"); v != verdictDuplicate {
		t.Fatalf("same attempt, other key, inside the window: %v, want duplicate", v)
	}
	if _, v := m.claim(t0.Add(61*time.Second), "sim-a", sub("m1:1", "m1", 1), outcomeDelivered, "id-4"); v != verdictAccepted {
		t.Fatalf("after the window: %v, want a fresh acceptance", v)
	}
	// Left: id-3's answer and expiry (until t0+119s), id-4's answer, send
	// and expiry. id-1's three are gone.
	if n := m.size(); n != 5 {
		t.Fatalf("live entries %d, want 5", n)
	}
}

func TestMemoryFailFirstIsForgottenToo(t *testing.T) {
	m := newMemory(time.Minute)
	t0 := time.Unix(1_750_000_000, 0)
	if _, v := m.claim(t0, "sim-a", sub("m3:1", "m3", 1), outcomeFailFirst, "x"); v != verdictTransient {
		t.Fatalf("first …0003: %v", v)
	}
	if _, v := m.claim(t0.Add(time.Second), "sim-b", sub("m3:2", "m3", 2), outcomeFailFirst, "y"); v != verdictAccepted {
		t.Fatalf("second …0003: %v", v)
	}
	if n := m.size(); n != 5 {
		t.Fatalf("live entries %d, want 5", n)
	}
	m.claim(t0.Add(2*time.Minute), "sim-a", sub("z", "z", 1), outcomeDelivered, "z")
	if n := m.size(); n != 3 {
		t.Fatalf("live entries %d after the window, want only the last claim's 3", n)
	}
}

// TestMemoryStaysBoundedOverAMillionSubmissions is the flat-memory promise:
// at 1,000 submissions per simulated second and a 1 s window, neither the
// maps nor the expiry slice outgrow the window's worth of entries.
func TestMemoryStaysBoundedOverAMillionSubmissions(t *testing.T) {
	const total, perWindow = 1_000_000, 1000
	m := newMemory(time.Second)
	now := time.Unix(1_750_000_000, 0)
	for i := range total {
		now = now.Add(time.Second / perWindow)
		key := strconv.Itoa(i)
		m.claim(now, "sim-a", sub(key, key, 1), outcomeDelivered, key)
		if i%1000 == 0 && m.size() > 3*(perWindow+1) {
			t.Fatalf("after %d submissions %d live entries, want at most %d", i, m.size(), 3*(perWindow+1))
		}
	}
	if c := cap(m.expiries); c > 4*perWindow {
		t.Fatalf("the expiry slice kept a capacity of %d for a window of %d", c, perWindow)
	}
}
