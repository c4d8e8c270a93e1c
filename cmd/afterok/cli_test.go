package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// syncBuffer is a bytes.Buffer that a running command and the test may use
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuffer) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestProviderSimCommandStartsAndAnswers runs `afterok provider-sim`
// through the real entry point on a free port, asks it for its stats and
// stops it. It used to panic at start: it has no database, and the table
// maintenance of every process ran on its nil pool.
func TestProviderSimCommandStartsAndAnswers(t *testing.T) {
	addr := freeAddr(t)
	t.Setenv("AFTEROK_SIM_ADDR", addr)
	t.Setenv("DATABASE_URL", "postgres://127.0.0.1:1/nothing_here?sslmode=disable") // it must not need one
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() { done <- runContext(ctx, []string{"provider-sim", "--callback", "http://" + freeAddr(t)}, &out, &errOut) }()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		select {
		case code := <-done:
			t.Fatalf("provider-sim exited with %d: %s", code, errOut.String())
		default:
		}
		res, err := http.Get("http://" + addr + "/stats")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == 200, fmt.Sprint("status ", res.StatusCode)
	})
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("provider-sim did not stop")
	}
}
