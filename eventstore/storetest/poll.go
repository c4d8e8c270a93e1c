package storetest

import (
	"testing"
	"time"
)

// Poll retries cond until it holds, failing the test with cond's last
// explanation when timeout passes: for state that other goroutines or
// processes (a projector, the pipeline) bring about asynchronously.
func Poll(t testing.TB, timeout time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s: %s", timeout, why)
		}
		time.Sleep(10 * time.Millisecond) // polling interval, not a wait for a result
	}
}
