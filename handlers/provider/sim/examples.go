package sim

// Test numbers of the simulator, which picks a message's fate by the
// destination's last four digits (outcomeOf). They live beside that table
// so that a change to it shows up as a change here, and are exported so
// that tests, the README and examples across the project use the same
// numbers.
//
// All are German mobile numbers (Telekom's 0151 range) that pass afterok's
// number validation (domain/phone); a test keeps it so as the metadata is
// updated. They are formally valid, not
// known to be unassigned, so they are for the simulator only: never send to
// them through a real provider.
const (
	// ExampleDelivered (any suffix other than 0001-0005): submit accepted,
	// receipt says delivered.
	ExampleDelivered = "+4915112345678"
	// ExampleUndeliverable (…0001): submit accepted, receipt says
	// undeliverable (permanent).
	ExampleUndeliverable = "+4915112340001"
	// ExampleRejected (…0002): submit rejected permanently as an invalid
	// destination, although the number is valid to us.
	ExampleRejected = "+4915112340002"
	// ExampleFailover (…0003): the first submit on the first route fails
	// transiently; failover to the next route succeeds.
	ExampleFailover = "+4915112340003"
	// ExampleNoReceipt (…0004): submit accepted, no receipt ever comes, so
	// the message expires.
	ExampleNoReceipt = "+4915112340004"
	// ExampleEarlyReceipt (…0005): the receipt is sent before the submit
	// response returns.
	ExampleEarlyReceipt = "+4915112340005"
)
