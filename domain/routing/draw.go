package routing

// Purposes mixed into draw, so that the provider pick and the retry jitter of
// the same attempt are independent: without them a message drawn to the
// heavier provider would also always get the longer delay.
const (
	purposeRoute byte = 'r'
	purposeRetry byte = 'j'
)

// draw returns a uniformly spread 64-bit number that depends only on its
// arguments. It stands in for randomness where the domain must be
// deterministic: the same message and attempt always draw the same number, so
// a replayed decision comes out identical.
//
// It is FNV-1a, inlined so the hot path does not allocate a hash.Hash, followed
// by the MurmurHash3 finalizer. FNV-1a alone mixes its low bits poorly (its
// lowest bit is the XOR of the input bytes' lowest bits), and callers reduce
// the result modulo small numbers like a weight sum of 100, which is exactly
// where that weakness would show as a skewed split.
func draw(purpose byte, messageID string, attempt int) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	h = (h ^ uint64(purpose)) * prime
	for i := 0; i < len(messageID); i++ {
		h = (h ^ uint64(messageID[i])) * prime
	}
	a := uint64(attempt)
	for range 8 {
		h = (h ^ (a & 0xff)) * prime
		a >>= 8
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
