package orders

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain/accept"
)

// PlanHash is what an Idempotency-Key is compared on: the order as it was
// understood, not the bytes it was sent as. Two bodies that mean the same
// order — keys in another order, other whitespace or escapes, a broadcast
// spelled as a message list — hash alike; any difference in a message,
// the validity, the send_at or the metadata does not. The metadata is hashed in its
// RFC 8785 (JCS) canonical form; prices are left out, so a replay after a
// price change still finds its original answer.
//
// Every field is length-prefixed: no two different plans share a byte
// sequence.
func PlanHash(p *accept.Plan) ([32]byte, error) {
	h := sha256.New()
	h.Write([]byte("afterok-order-v1"))
	writeInt(h, int64(len(p.Messages)))
	for i := range p.Messages {
		m := &p.Messages[i]
		writeField(h, m.To)
		writeField(h, m.From)
		writeField(h, m.Body)
	}
	writeInt(h, int64(p.ValiditySeconds))
	var meta []byte
	if len(p.ClientMetadata) > 0 {
		v := jsontext.Value(append([]byte(nil), p.ClientMetadata...))
		if err := v.Canonicalize(); err != nil {
			return [32]byte{}, fmt.Errorf("canonical metadata: %w", err)
		}
		meta = v
	}
	writeField(h, string(meta))
	// Written only when given, so that keys recorded before send_at
	// existed still match their replays.
	if !p.SendAt.IsZero() {
		writeField(h, "send_at")
		writeInt(h, p.SendAt.UnixMicro())
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

func writeInt(h hash.Hash, n int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

func writeField(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}
