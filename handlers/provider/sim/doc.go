// Package sim is the provider simulator: a real HTTP server that behaves like
// a set of SMS providers speaking the sandbox protocol, so that every path of
// a message's life can be run end to end without a real provider. `afterok
// provider-sim` serves it alone and `afterok dev` inside the one process; the
// command owns the http.Server and calls Run for the receipt sender.
//
// Submissions are answered after SubmitLatency ± SubmitJitter; delivery
// receipts are posted, signed with the provider's secret, to
// {CallbackBase}/v1/receipts/{provider} ReceiptDelay after acceptance, one
// receipt per message segment. What happens is chosen by the destination's
// last four digits, like a sandbox's test numbers:
//
//	…0001  accepted; the receipt says undeliverable (error_code unknown_subscriber)
//	…0002  refused: 400 invalid_destination (permanent)
//	…0003  the first submission of that reference to this simulator, through
//	       any provider, fails with 503 unavailable (transient); later ones
//	       are accepted and delivered
//	…0004  accepted; no receipt ever comes
//	…0005  accepted; the receipt is posted, and its answer awaited, before
//	       the submission is answered
//	other  accepted; the receipt says delivered
//
// A destination that is not an E.164 number is refused like …0002, and an
// empty body with 422 rejected.
//
// The simulator remembers each submission for DedupWindow and no longer: the
// first answer per (provider, Idempotency-Key), replayed unchanged with
// "Idempotent-Replayed: true"; and each (reference, attempt) it accepted, so
// that sending the same attempt again under another key, or through another
// provider, is counted in duplicate_submissions. That counter is what the
// fault tests hold at zero, so detection must never be weakened for speed.
// Transient refusals are not remembered: retrying the same key may succeed.
//
// Receipt sending never drops silently: a full queue holds submissions back,
// a refused callback is retried with backoff for ReceiptMaxAge (hours, as
// real providers do) and then counted in receipts_failed, and receipts abandoned at shutdown are counted
// in receipts_dropped.
package sim
