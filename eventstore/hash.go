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
//
// Because prev_hash comes first and nothing else depends on it, the same
// hash can be computed by PostgreSQL as sha256(prev_hash || canonical):
// the one-statement append (append_exact.go) sends the canonical bytes and
// lets the database join them to the stream's last hash.
func eventHash(h hash.Hash, buf *[]byte, prev []byte, in chainInput) ([]byte, error) {
	canon, err := appendCanonical((*buf)[:0], in)
	*buf = canon
	if err != nil {
		return nil, err
	}
	h.Reset()
	h.Write(prev)
	h.Write(canon)
	return h.Sum(nil), nil
}

// appendCanonical appends the canonical event (everything the hash covers
// after prev_hash) to dst.
func appendCanonical(dst []byte, in chainInput) ([]byte, error) {
	dst = appendString(dst, in.Stream)
	dst = binary.BigEndian.AppendUint64(dst, uint64(in.Version))
	dst = append(dst, in.ID[:]...)
	dst = appendString(dst, in.Type)
	dst = binary.BigEndian.AppendUint64(dst, uint64(in.SchemaVersion))
	dst = binary.BigEndian.AppendUint64(dst, uint64(in.RecordedAt.UnixMicro()))
	for _, doc := range [][]byte{in.Data, in.Metadata} {
		// Canonicalise in place after a length placeholder, then fill it in.
		at := len(dst)
		dst = binary.BigEndian.AppendUint64(dst, 0)
		v := jsontext.Value(append(dst[at+8:], doc...))
		if err := v.Canonicalize(); err != nil {
			return dst, fmt.Errorf("canonicalize %s v%d of %s: %w", in.Type, in.Version, in.Stream, err)
		}
		binary.BigEndian.PutUint64(dst[at:], uint64(len(v)))
		dst = append(dst[:at+8], v...)
	}
	return dst, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(len(s)))
	return append(dst, s...)
}

// hasher computes chain hashes reusing its buffers; not safe for
// concurrent use.
type hasher struct {
	h   hash.Hash
	buf []byte
}

func newHasher() *hasher { return &hasher{h: sha256.New()} }

func (h *hasher) sum(prev []byte, r *eventRow) ([]byte, error) {
	return eventHash(h.h, &h.buf, prev, r.chainInput())
}

func (r *eventRow) chainInput() chainInput {
	return chainInput{Stream: r.stream, Version: r.version, ID: r.id, Type: r.typ,
		SchemaVersion: r.schema, RecordedAt: r.recorded, Data: r.data, Metadata: r.meta}
}
