package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// sseClient reads a Server-Sent Events stream in a goroutine it owns
// (close stops it and waits).
type sseClient struct {
	status     int
	events     chan sseEvent
	heartbeats chan struct{}
	// control gets the records without an id (the server's own, such as
	// `revoked`); ended is closed when the server ends the stream.
	control   chan sseEvent
	ended     chan struct{}
	count     atomic.Int64
	cancel    context.CancelFunc
	done      sync.WaitGroup
	closeOnce sync.Once
}

type sseEvent struct {
	id   string
	typ  string
	data map[string]any
}

func openStream(t *testing.T, url, key, lastEventID string) *sseClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Accept", "text/event-stream")
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, 200, res.StatusCode)
	require.Equal(t, "text/event-stream", res.Header.Get("Content-Type"))
	c := &sseClient{status: res.StatusCode, events: make(chan sseEvent, 100_000), heartbeats: make(chan struct{}, 100),
		control: make(chan sseEvent, 10), ended: make(chan struct{}), cancel: cancel}
	// A failing test must not leave the stream open: the test server's
	// Close would wait for it forever.
	t.Cleanup(c.close)
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		defer close(c.ended)
		defer res.Body.Close()
		sc := bufio.NewScanner(res.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		var ev sseEvent
		var data string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.id != "" {
					_ = json.Unmarshal([]byte(data), &ev.data)
					c.count.Add(1)
					c.events <- ev
				} else if ev.typ != "" {
					_ = json.Unmarshal([]byte(data), &ev.data)
					select {
					case c.control <- ev:
					default:
					}
				}
				ev, data = sseEvent{}, ""
			case strings.HasPrefix(line, ": heartbeat"):
				select {
				case c.heartbeats <- struct{}{}:
				default:
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "event: "):
				ev.typ = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				data += strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return c
}

func (c *sseClient) next(t *testing.T, timeout time.Duration) sseEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		return ev
	case <-time.After(timeout):
		t.Fatalf("no event within %s", timeout)
		return sseEvent{}
	}
}

func (c *sseClient) waitHeartbeat(t *testing.T, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.heartbeats:
	case <-time.After(timeout):
		t.Fatalf("no heartbeat within %s", timeout)
	}
}

func (c *sseClient) received() int64 { return c.count.Load() }

func (c *sseClient) close() {
	c.closeOnce.Do(func() {
		c.cancel()
		c.done.Wait()
	})
}
