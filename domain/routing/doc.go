// Package routing owns the policy that decides where and when a message's
// next attempt goes: the route table (which providers may carry a
// destination), Choose (which of them carries this attempt), the per-provider
// circuit Breaker and the RetryPolicy (whether and when to try again).
//
// Like the rest of domain, it must never perform I/O, read the clock or draw
// from a global random source. Time is passed in, and every "random" choice
// (the weighted provider pick, the retry jitter) is derived from the message
// id and attempt number, so replaying the same facts yields the same decision
// and a test can pin it down. Nothing here starts goroutines or locks: the
// Breaker is plain state that its owner serializes.
package routing
