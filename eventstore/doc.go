// Package eventstore is afterok's PostgreSQL event store: append with an
// expected version, atomic multi-stream append, stream reads, the gap-safe
// global tail, checkpointed consumers, hash-chain verification and the relay
// to JetStream.
//
// It must never update or delete an event (the database refuses it too),
// never serialise all writers through one lock or counter row (appends lock
// only the stream rows they touch), and never treat a conflicting append as
// success: a writer with a stale expected version gets ErrWrongExpectedVersion
// and nothing is written.
package eventstore
