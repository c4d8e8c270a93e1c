// Package provider is afterok's boundary with SMS providers: the Provider
// interface that dispatch workers submit through, the HTTP adapter that speaks
// the sandbox protocol, and the parsing and signature checks that the receipt
// intake applies to delivery receipts.
//
// It owns one translation: every answer a provider gives (an HTTP status, an
// error code, a receipt status) becomes a normalized domain.Failure here, in
// the two tables documented on classify (submissions) and receiptMeaning
// (receipts), so that nothing above this package ever reads a provider's
// dialect. It never records events, retries, or chooses routes: those
// decisions belong to dispatch and the receipt intake, which see only
// normalized values.
package provider
