package tracker

import (
	"context"

	"github.com/afterok/afterok/eventstore"
)

// Handle exposes the tracker's batch handler, for tests that drive the
// consumer step by step.
func Handle(t *Tracker) func(context.Context, *eventstore.Tx, []eventstore.RecordedEvent) error {
	return t.apply
}
