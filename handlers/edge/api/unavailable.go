package api

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/puddle/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// unavailableRetryAfter is what a 503 tells the client to wait: long
// enough for a pool to reconnect to a restarted database or NATS server,
// short enough that a retry with the same Idempotency-Key is prompt.
const unavailableRetryAfter = 2 * time.Second

// dependencyAway lists the sentinel errors that mean PostgreSQL or NATS is
// not answering now, through no fault of the request.
var dependencyAway = []error{
	context.DeadlineExceeded,
	// A connection that went away under a query: the server restarted or
	// a proxy cut it. pgx returns the socket's error as it is.
	io.EOF, io.ErrUnexpectedEOF, net.ErrClosed, syscall.ECONNRESET, syscall.ECONNREFUSED,
	syscall.ECONNABORTED, syscall.EPIPE, syscall.ETIMEDOUT, syscall.EHOSTUNREACH, syscall.ENETUNREACH,
	pgconn.ErrConnClosed,
	puddle.ErrClosedPool, // the pool was closed under the request (shutdown)
	nats.ErrNoResponders, nats.ErrTimeout, nats.ErrConnectionClosed, nats.ErrDisconnected,
	nats.ErrConnectionDraining, nats.ErrConnectionReconnecting, nats.ErrNoServers, nats.ErrStaleConnection,
	jetstream.ErrNoStreamResponse, jetstream.ErrServerShutdown, jetstream.ErrJetStreamNotEnabled,
	jetstream.ErrAsyncPublishTimeout, jetstream.ErrJetStreamPublisherClosed, jetstream.ErrTooManyStalledMsgs,
}

// isUnavailable recognises the failures of a dependency that are not the
// request's fault — a lost or refused connection, a timeout, the server
// shutting down or out of connections — so that every one of them is a 503
// with Retry-After, whichever handler met it. The table in problem.go puts
// it after every kind of bad input, so a client's own mistake never hides
// behind it.
func isUnavailable(err error) bool {
	for _, away := range dependencyAway {
		if errors.Is(err, away) {
			return true
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return unavailableSQLState(pe.Code)
	}
	var ce *pgconn.ConnectError
	var ne *net.OpError
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) || pgconn.SafeToRetry(err)
}

// unavailableSQLState: class 08 (connection exception), 53 (insufficient
// resources: 53300 too_many_connections, disk full, out of memory), 57
// (operator intervention: 57P01 admin_shutdown, 57P02 crash_shutdown,
// 57P03 cannot_connect_now, 57014 a statement timeout) and 58 (system
// error: an I/O error on the server).
func unavailableSQLState(code string) bool {
	if len(code) < 2 {
		return false
	}
	switch code[:2] {
	case "08", "53", "57", "58":
		return true
	}
	return false
}
