// Package domain is afterok's business in plain Go: the Order, Message and
// Account aggregates, the events they produce, the message lifecycle state
// machine and the money rules.
//
// Aggregates are values. A command is a method that checks the rules and
// returns new events; Apply folds an event into the aggregate. Nothing in this
// package (or its subpackages) performs I/O, reads the clock, generates random
// ids on its own or knows about SQL, HTTP or NATS: time and identifiers are
// passed in by the caller. If a test here needs a mock, the code is in the
// wrong package.
package domain
