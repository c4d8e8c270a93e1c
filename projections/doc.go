// Package projections owns afterok's read side: the read models in
// PostgreSQL (messages, orders, per-provider statistics, accounts), the
// runner that keeps them current from the event store, their rebuild and
// verification, and the queries the API answers from them.
//
// Every read model is derived from the events and nothing else. A
// projection follows the store's gap-safe tail through an
// eventstore.Consumer and writes its rows in the same transaction as its
// checkpoint, so an event is applied once whatever crashes or restarts.
// It must never be the source of a decision (the pipeline decides from the
// aggregates in the store) and never write outside its own tables.
//
// Tenancy is enforced here, in the SQL: every query takes a Tenant, and the
// zero Tenant matches no row.
package projections
