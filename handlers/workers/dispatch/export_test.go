package dispatch

import "context"

// RecordDeadLetter is the advisory handler's write, for tests that feed it
// an advisory while the store is away.
func (w *Worker) RecordDeadLetter(ctx context.Context, seq uint64, deliveries int) {
	w.recordDeadLetter(ctx, seq, deliveries)
}
