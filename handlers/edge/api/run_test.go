package api_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/handlers/edge/api"
)

// TestRunEndsOpenStreamsOnShutdown: when Run's context ends, the server
// ends its open event streams (as a cut does: the client resumes with its
// Last-Event-ID) and stops the shared tail's reader, instead of waiting
// for the streams until the shutdown timeout and leaving the reader
// behind.
func TestRunEndsOpenStreamsOnShutdown(t *testing.T) {
	e := newEnv(t, api.Config{}, accept.DefaultPolicy())
	c := e.account(1_000_000)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- e.api.Run(ctx, l) }()

	s := openStream(t, "http://"+l.Addr().String()+"/v1/events/stream?heartbeat=1", c.APIKey, "")
	s.waitHeartbeat(t, 10*time.Second) // attached: the tail's reader runs

	cancel()
	select {
	case err := <-ran:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Run waited for the open event stream")
	}
	ended := make(chan struct{})
	go func() { s.done.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream stayed open after the shutdown")
	}
}
