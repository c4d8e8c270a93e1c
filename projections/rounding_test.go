package projections_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/projections"
)

// TestVerifyAgreesOnNanosecondTimes writes events whose times carry
// nanoseconds, as the pipeline's clocks do, and has the projector apply the
// submission and the delivery in separate batches: the projector then
// measures the delivery from the submission time it read back from its row
// (microseconds, as PostgreSQL stores it) while verify folds the events
// afresh (nanoseconds). The submission lies 500 ns past a microsecond and
// the delivery 999.9999 ms after it, so truncating one side only puts the
// latency on either side of a millisecond; both must use one rule.
func TestVerifyAgreesOnNanosecondTimes(t *testing.T) {
	f := newFixture(t)
	f.run(projections.Config{})
	acct := f.openAccount(100_000_000)
	_, ids := f.placeOrder(acct, "+4915100000001")
	id := ids[0]
	f.queue(id)
	f.route(id, "sim-a")
	submitted := f.tick().Add(500 * time.Nanosecond)
	f.step(id, func(m *domain.Message, _ time.Time) (domain.Event, error) {
		return m.Submit(fmt.Sprintf("sim-a-%s-1", id), 40*time.Millisecond, submitted)
	})
	f.caughtUp() // the submission is in the row before the delivery is read
	delivered := submitted.Add(time.Second - 100*time.Nanosecond)
	f.step(id, func(m *domain.Message, _ time.Time) (domain.Event, error) {
		return m.Deliver(m.Attempt, json.RawMessage(`{"status":"DELIVRD"}`), delivered, delivered)
	})
	f.caughtUp()
	f.requireVerified()
}
