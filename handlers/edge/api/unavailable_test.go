package api

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"
)

// TestDependencyAwayErrorsAre503 pins the classification of "a dependency
// is away" errors as the drivers return them (a real run of each is in
// cmd/afterok's TestDependencyAwayIsUnavailable): each is 503 unavailable
// with Retry-After, and a request's own mistake wrapping a similar cause
// keeps its code.
func TestDependencyAwayErrorsAre503(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}
	cases := []struct {
		name   string
		err    error
		status int
	}{
		{"connection reset by peer", fmt.Errorf("read streams: %w", reset), 503},
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, 503},
		{"EOF mid-query", fmt.Errorf("load: %w", io.ErrUnexpectedEOF), 503},
		{"EOF", io.EOF, 503},
		{"closed pool", fmt.Errorf("acquire: %w", puddle.ErrClosedPool), 503},
		{"conn closed", pgconn.ErrConnClosed, 503},
		{"admin shutdown", &pgconn.PgError{Code: "57P01"}, 503},
		{"crash shutdown", &pgconn.PgError{Code: "57P02"}, 503},
		{"cannot connect now", &pgconn.PgError{Code: "57P03"}, 503},
		{"too many connections", &pgconn.PgError{Code: "53300"}, 503},
		{"connection failure", &pgconn.PgError{Code: "08006"}, 503},
		{"nats no responders", fmt.Errorf("publish: %w", nats.ErrNoResponders), 503},
		{"nats timeout", nats.ErrTimeout, 503},
		{"nats disconnected", nats.ErrDisconnected, 503},
		{"nats closed", nats.ErrConnectionClosed, 503},
		{"jetstream no response", jetstream.ErrNoStreamResponse, 503},
		{"unique violation is ours", &pgconn.PgError{Code: "23505"}, 500},
		{"a bug is ours", errors.New("nil map"), 500},
		{"a truncated body is the client's", fail(errInvalidRequest, "body: %v", io.ErrUnexpectedEOF), 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, d := problemFor(c.err, "req_1", "/v1/x")
			require.Equal(t, c.status, p.Status)
			rec := httptest.NewRecorder()
			writeProblem(rec, p, d)
			if c.status == 503 {
				require.Equal(t, "unavailable", p.Code)
				require.Equal(t, "2", rec.Header().Get("Retry-After"))
			} else {
				require.Empty(t, rec.Header().Get("Retry-After"))
			}
		})
	}
}
