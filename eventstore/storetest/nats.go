package storetest

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/afterok/afterok/eventstore/bus"
)

// NATS is a JetStream connection with names of its own.
type NATS struct {
	Conn  *nats.Conn
	JS    jetstream.JetStream
	Names bus.Names
	URL   string
	// Embedded is set when the test runs its own server (NATS_URL unset);
	// fault tests restart it.
	Embedded *bus.Embedded
	dir      string
	addr     string // of the stopped embedded server
}

// TestEventsMaxBytes is the events stream's size limit in tests.
const TestEventsMaxBytes = 256 << 20

// NewNATS connects to the NATS at NATS_URL, or starts an embedded JetStream
// server for the test, creates the afterok streams under a random prefix,
// and deletes them when the test ends.
func NewNATS(t testing.TB) *NATS {
	t.Helper()
	return newNATS(t, os.Getenv("NATS_URL"))
}

// NewEmbeddedNATS is NewNATS with an embedded server of the test's own even
// when NATS_URL is set: for tests that stop the broker, which they must
// never do to the machine's shared one.
func NewEmbeddedNATS(t testing.TB) *NATS {
	t.Helper()
	return newNATS(t, "")
}

func newNATS(t testing.TB, url string) *NATS {
	t.Helper()
	n := &NATS{Names: bus.Names{Prefix: strings.ToLower(RandomName("t"))}}
	if url != "" {
		n.URL = url
	} else {
		n.dir = t.TempDir()
		e, err := bus.StartEmbedded(n.dir, "127.0.0.1", -1)
		if err != nil {
			t.Fatalf("storetest: %v", err)
		}
		n.Embedded, n.URL = e, e.URL
	}
	nc, js, err := bus.Connect(n.URL, "afterok-test")
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	n.Conn, n.JS = nc, js
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A small size limit: JetStream reserves a stream's MaxBytes against
	// the server's storage, and test runs share the machine's NATS.
	if err := bus.EnsureStreams(ctx, js, n.Names, bus.StreamConfig{EventsMaxBytes: TestEventsMaxBytes}); err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range []string{n.Names.EventsStream(), n.Names.DispatchStream()} {
			_ = js.DeleteStream(ctx, s)
		}
		nc.Close()
		if n.Embedded != nil {
			n.Embedded.Close()
		}
	})
	return n
}

// Restart stops and restarts the embedded server on the same port and data
// directory (a NATS restart mid-run). It fails the test when running
// against an external server.
func (n *NATS) Restart(t testing.TB, down time.Duration) {
	t.Helper()
	if n.Embedded == nil {
		t.Skip("restart needs the embedded server (NATS_URL is set)")
	}
	n.Stop(t)
	time.Sleep(down) // fault injection: the broker is away for a while
	n.Start(t)
}

// Stop shuts the embedded server down (its data stays for Start).
func (n *NATS) Stop(t testing.TB) {
	t.Helper()
	if n.Embedded == nil {
		t.Fatal("storetest: stopping NATS needs the embedded server (use NewEmbeddedNATS)")
	}
	n.addr = n.Embedded.Server.Addr().String()
	n.Embedded.Close()
}

// Start starts the embedded server again on the same port and data
// directory, after Stop.
func (n *NATS) Start(t testing.TB) {
	t.Helper()
	host, p := splitHostPort(t, n.addr)
	e, err := bus.StartEmbedded(n.dir, host, p)
	if err != nil {
		t.Fatalf("storetest: restart nats: %v", err)
	}
	n.Embedded = e
}
