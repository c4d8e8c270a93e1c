package eventstore

// AsOwner returns c run under the owner name given (instead of a random
// one), so a test can find its partitions.
func AsOwner(c Consumer, owner string) Consumer {
	c.owner = owner
	return c
}

// Vanishing returns c whose Run, when its context ends, stops the way a
// killed process does: without giving its partitions back.
func Vanishing(c Consumer) Consumer {
	c.vanish = true
	return c
}

// AbandonedMsg is the debug line of a batch the fence rolled back.
const AbandonedMsg = abandonedMsg
