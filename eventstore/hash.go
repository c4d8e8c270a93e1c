package eventstore

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash"
	"time"

	"github.com/go-json-experiment/json/jsontext"
	"github.com/google/uuid"
)

// genesisHash is the prev_hash of every stream's first event.
var genesisHash = make([]byte, sha256.Size)

// chainInput is what one event contributes to its stream's hash chain.
type chainInput struct {
	Stream        string
	Version       int
	ID            uuid.UUID
	Type          string
	SchemaVersion int
	RecordedAt    time.Time
	Data          []byte // JSON, any formatting
	Metadata      []byte // JSON, any formatting
}

// eventHash computes hash = SHA-256(prev_hash ‖ canonical event).
//
// The canonical event is a length-prefixed concatenation of the envelope
// fields and the RFC 8785 (JCS) canonical form of data and metadata. JCS is
// what makes verification possible at all: PostgreSQL's jsonb reorders keys
// and rewrites whitespace and escapes, so the bytes read back differ from
// the bytes written, but both canonicalise to the same text. recorded_at is
// hashed at microsecond precision, the precision timestamptz keeps.
func eventHash(h hash.Hash, buf *[]byte, prev []byte, in chainInput) ([]byte, error) {
	h.Reset()
	h.Write(prev)
	writeString(h, in.Stream)
	writeUint(h, uint64(in.Version))
	h.Write(in.ID[:])
	writeString(h, in.Type)
	writeUint(h, uint64(in.SchemaVersion))
	writeUint(h, uint64(in.RecordedAt.UnixMicro()))
	for _, doc := range [][]byte{in.Data, in.Metadata} {
		v := jsontext.Value(append((*buf)[:0], doc...))
		if err := v.Canonicalize(); err != nil {
			return nil, fmt.Errorf("canonicalize %s v%d of %s: %w", in.Type, in.Version, in.Stream, err)
		}
		writeBytes(h, v)
		*buf = v
	}
	return h.Sum(nil), nil
}

// hasher computes chain hashes reusing its buffers; not safe for
// concurrent use.
type hasher struct {
	h   hash.Hash
	buf []byte
}

func newHasher() *hasher { return &hasher{h: sha256.New()} }

func (h *hasher) sum(prev []byte, r *eventRow) ([]byte, error) {
	return eventHash(h.h, &h.buf, prev, chainInput{Stream: r.stream, Version: r.version, ID: r.id, Type: r.typ,
		SchemaVersion: r.schema, RecordedAt: r.recorded, Data: r.data, Metadata: r.meta})
}

func writeUint(h hash.Hash, v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

func writeString(h hash.Hash, s string) {
	writeUint(h, uint64(len(s)))
	h.Write([]byte(s))
}

func writeBytes(h hash.Hash, b []byte) {
	writeUint(h, uint64(len(b)))
	h.Write(b)
}
