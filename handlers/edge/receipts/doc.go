// Package receipts is afterok's delivery-receipt intake: the endpoint
// providers call back (POST /v1/receipts/{provider}), the receipts table
// that keeps every receipt they sent, and the parking of receipts that
// arrive before the submission they report on.
//
// It owns one decision: what a receipt does to its message. It authenticates
// the callback by the provider's HMAC signature (handlers/provider checks
// it, in constant time), records every receipt durably with its
// disposition, and turns the applicable ones into MessageDelivered,
// MessageFailed or MessageRetried in the same transaction. It never
// changes a final state, never applies a receipt to an attempt whose
// submission is not recorded, never reads a provider's dialect (receipts
// arrive normalized from handlers/provider) and never writes an HTTP
// error itself (handlers/edge/api's table does).
//
// # Dispositions
//
// Every receipt gets a row in the receipts table with one of:
//
//   - applied: the message was submitted at the receipt's attempt, and the
//     receipt acted on it (an event, or a counted part, see below);
//   - parked: the submission of that attempt is not recorded yet (the
//     message is accepted, queued or routed at it, or still waiting to
//     retry into it). Parked receipts are applied in arrival order by
//     ApplyParked, which dispatch workers call after MessageSubmitted, by
//     the sweeper (RunSweeper) when a worker died in between, and by any
//     later callback for the same message. If the message moves past the
//     attempt instead, the parked receipt is resolved as ignored;
//   - ignored, with a reason: final_state (a late or repeated receipt never
//     changes a final state), stale_attempt (an older attempt, or one
//     already retried), unknown_message (no such message: message streams
//     exist from acceptance on, so nothing could ever make such a receipt
//     applicable; it is kept for support rather than parked forever),
//     duplicate (the same provider, attempt, part and status is already
//     applied or parked), provider_mismatch (not the provider the attempt
//     was routed to, or not the provider message id it was submitted
//     with). A receipt from another provider than the attempt's is refused
//     as soon as the attempt is routed, never parked; one for an attempt
//     not routed yet is parked apart (duplicates are per provider) and
//     refused once the attempt's provider is known, so a provider can never
//     shadow, change or suppress another provider's receipts.
//
// The raw receipt is kept in the row and in the event it causes.
//
// # Refused receipts
//
// A receipt that cannot be used (handlers/provider.ParseReceiptBatch: a
// missing or mistyped field, an integer out of range, text that is not
// valid Unicode or holds U+0000, an unknown status) is refused alone: it
// gets a row in receipt_refusals (the bytes as sent, the field, a code),
// a count in afterok_receipts_refused_total and a log line, and the answer
// lists it under refusals; the callback's other receipts are settled as
// usual and the answer is 200. Failing the whole callback instead would
// make a provider that retries resend its good receipts forever in vain.
// Only a body that is not a JSON object with one receipts array is refused
// as a whole (400), and one over MaxBodyBytes is 413.
//
// # Multipart messages
//
// A message sent as N segments gets one receipt per part (part i of N).
// An attempt resolves as follows:
//
//   - delivered once every part 1…N has a delivered receipt. N is the
//     largest part count the attempt's receipts give: the provider's split,
//     which may differ from our own segment count. Parts are counted from
//     the receipts table, distinct by part number, so a repeated part never
//     counts twice; while parts are missing the message stays submitted
//     and the delivered parts are recorded as applied without an event.
//     MessageDelivered carries the receipt of the part that completed it;
//     the rows of the other parts are linked to it by event_id;
//   - failed as soon as one part fails permanently, whatever the others say;
//   - retried (or failed, when the retry policy says the attempts or the
//     validity are used up) as soon as one part fails transiently. The next
//     attempt sends the whole message again, so parts already delivered may
//     reach the handset twice; receipts of the old attempt that arrive
//     afterwards are stale.
//
// # Concurrency
//
// A callback's receipts are settled in one transaction with one
// multi-stream append, under the row locks of their message streams, and
// decided again from a fresh load when a stream moved in the meantime; see
// settle.go. After ConflictRetries tries the callback is answered 503 and
// nothing of it is kept, so the provider's retry finds a clean slate.
package receipts
