package orders

import "crypto/sha256"

// RequestHash hashes a request body the way the tests' requests compare on
// replay (the API hashes the order as understood, not the raw body).
func RequestHash(body []byte) [32]byte { return sha256.Sum256(body) }
