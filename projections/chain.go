package projections

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"

	"github.com/go-json-experiment/json/jsontext"
)

// The hash chain, recomputed for one stream.
//
// eventstore.Verify checks every chain in the store in one pass; an audit
// of one message needs its one stream, and eventstore exports no function
// for that. This is the same computation (see eventstore/hash.go: SHA-256
// over the previous hash and a length-prefixed envelope with data and
// metadata in RFC 8785 canonical form), and TestChainAgreesWithEventstore
// holds the two together: it tampers with stored events and requires both
// to call the same streams broken. When eventstore grows a per-stream
// verification, this file should become a call to it.

// chainProblems returns what is wrong with a stream's chain (nil: intact).
func chainProblems(evs []StoredEvent) []string {
	var problems []string
	prev := make([]byte, sha256.Size) // the genesis hash
	h := sha256.New()
	for i, e := range evs {
		if e.Version != i+1 {
			problems = append(problems, fmt.Sprintf("v%d: version follows %d (gap or duplicate)", e.Version, i))
		}
		if !bytes.Equal(e.PrevHash, prev) {
			problems = append(problems, fmt.Sprintf("v%d: prev_hash is not the previous event's hash (chain broken)", e.Version))
		}
		sum, err := chainHash(h, e.PrevHash, &e)
		switch {
		case err != nil:
			problems = append(problems, fmt.Sprintf("v%d: cannot hash: %v", e.Version, err))
		case !bytes.Equal(sum, e.Hash):
			problems = append(problems, fmt.Sprintf("v%d: hash does not match the event's content (altered)", e.Version))
		}
		prev = e.Hash
	}
	return problems
}

func chainHash(h hash.Hash, prev []byte, e *StoredEvent) ([]byte, error) {
	h.Reset()
	h.Write(prev)
	writeChainBytes(h, []byte(e.Stream))
	writeChainUint(h, uint64(e.Version))
	h.Write(e.ID[:])
	writeChainBytes(h, []byte(e.Type))
	writeChainUint(h, uint64(e.SchemaVersion))
	writeChainUint(h, uint64(e.RecordedAt.UnixMicro()))
	for _, doc := range [][]byte{e.Data, e.Metadata} {
		v := jsontext.Value(bytes.Clone(doc))
		if err := v.Canonicalize(); err != nil {
			return nil, err
		}
		writeChainBytes(h, v)
	}
	return h.Sum(nil), nil
}

func writeChainUint(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func writeChainBytes(h hash.Hash, b []byte) {
	writeChainUint(h, uint64(len(b)))
	h.Write(b)
}
