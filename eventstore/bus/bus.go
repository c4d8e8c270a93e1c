// Package bus names and sets up afterok's JetStream streams and can run an
// embedded JetStream server (for `afterok dev` and tests that do not point
// at an external NATS).
//
// Two streams exist per deployment prefix:
//
//   - <PREFIX>_EVENTS, subjects <prefix>.events.<account>.<aggregate>.<type>:
//     every stored event, published by the relay, for downstream
//     subscribers. The aggregate id is a header, not a subject token, so
//     the broker's subject state does not grow with every message id.
//   - <PREFIX>_DISPATCH, subjects <prefix>.dispatch.<shard>: the work queue
//     of dispatch jobs (one per message attempt), consumed by workers.
package bus

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Names derives stream names and subjects from a prefix.
type Names struct {
	Prefix string // lower-case subject prefix, e.g. "afterok"
}

// DefaultPrefix is the prefix of a deployment that sets none.
const DefaultPrefix = "afterok"

// DispatchShards is the number of dispatch subjects; jobs are spread over
// them by a hash of the message id so that consumers could partition.
const DispatchShards = 16

// EventsStream is the name of the events stream.
func (n Names) EventsStream() string { return strings.ToUpper(n.Prefix) + "_EVENTS" }

// DispatchStream is the name of the dispatch work-queue stream.
func (n Names) DispatchStream() string { return strings.ToUpper(n.Prefix) + "_DISPATCH" }

// EventSubject is the subject an event is published on. Empty tokens
// become "_" (an event without an account).
func (n Names) EventSubject(account, aggregate, eventType string) string {
	return n.Prefix + ".events." + token(account) + "." + token(aggregate) + "." + token(eventType)
}

// EventsFilter is the subject filter of every event of an account ("*"
// for every account).
func (n Names) EventsFilter(account string) string {
	if account == "" {
		account = "*"
	}
	return n.Prefix + ".events." + account + ".>"
}

// DispatchSubject is the work-queue subject of a message's jobs.
func (n Names) DispatchSubject(messageID string) string {
	h := fnv.New32a()
	h.Write([]byte(messageID))
	return fmt.Sprintf("%s.dispatch.%d", n.Prefix, h.Sum32()%DispatchShards)
}

func token(s string) string {
	if s == "" {
		return "_"
	}
	return strings.Map(func(r rune) rune {
		if r == '.' || r == '*' || r == '>' || r <= ' ' {
			return '_'
		}
		return r
	}, s)
}

// DefaultDuplicates is the default deduplication window, JetStream's own
// default. A re-publish after a crash repeats at most what was published
// since the last checkpoint (the relay's is written every 200 ms), so the
// window needs to cover the restart, not the run.
const DefaultDuplicates = 2 * time.Minute

// DefaultEventsMaxBytes is the events stream's default size limit, 8 GiB:
// about eight million events. A subscriber that falls further behind
// catches up from the store (GET /v1/events), which keeps every event.
const DefaultEventsMaxBytes = 8 << 30

// StreamConfig tunes the streams EnsureStreams creates.
type StreamConfig struct {
	// Replicas of each stream (1 on a single server).
	Replicas int
	// EventsMaxAge bounds how long the events stream keeps events for
	// subscribers that fell behind (default 7 days); the store keeps them
	// for ever.
	EventsMaxAge time.Duration
	// EventsMaxBytes bounds the events stream's size (default
	// DefaultEventsMaxBytes); the oldest events go first. Every event takes
	// about 1 KB there, so 7 days at full load would fill any disk.
	EventsMaxBytes int64
	// Duplicates is the deduplication window for Nats-Msg-Id (default
	// DefaultDuplicates): a relay or scheduler that crashes and re-publishes
	// within it produces no duplicate. The server keeps every id of the
	// window in memory, about 100 bytes each: six ids per message sent, so
	// at 2,000 messages/s a 2-minute window holds ~140 MB, a 10-minute
	// one ~700 MB.
	Duplicates time.Duration
	// SyncAlways makes the server fsync every write before acknowledging.
	// JetStream's default syncs every two minutes, so a machine crash can
	// lose acknowledged messages: the dispatch queue can recover from that
	// (the scheduler re-queues from the store), the events stream's
	// subscribers can catch up from the store too.
	SyncAlways bool
}

// EnsureStreams creates or updates both streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, n Names, c StreamConfig) error {
	if c.Replicas <= 0 {
		c.Replicas = 1
	}
	if c.EventsMaxAge <= 0 {
		c.EventsMaxAge = 7 * 24 * time.Hour
	}
	if c.Duplicates <= 0 {
		c.Duplicates = DefaultDuplicates
	}
	if c.EventsMaxBytes <= 0 {
		c.EventsMaxBytes = DefaultEventsMaxBytes
	}
	streams := []jetstream.StreamConfig{
		{Name: n.EventsStream(), Subjects: []string{n.Prefix + ".events.>"}, Storage: jetstream.FileStorage,
			Retention: jetstream.LimitsPolicy, MaxAge: c.EventsMaxAge, MaxBytes: c.EventsMaxBytes, Discard: jetstream.DiscardOld,
			Duplicates: c.Duplicates, Replicas: c.Replicas,
			Description: "every afterok event, in store order, for downstream subscribers"},
		{Name: n.DispatchStream(), Subjects: []string{n.Prefix + ".dispatch.>"}, Storage: jetstream.FileStorage,
			Retention: jetstream.WorkQueuePolicy, Duplicates: c.Duplicates, Replicas: c.Replicas,
			Description: "afterok dispatch jobs: one per message attempt"},
	}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// Embedded is a JetStream server running inside this process.
type Embedded struct {
	Server *server.Server
	URL    string
}

// StartEmbedded starts a JetStream server with its data in dir, listening
// on host:port (port -1 picks a free one).
func StartEmbedded(dir, host string, port int) (*Embedded, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "afterok-embedded", Host: host, Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, MaxPayload: 8 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("embedded nats: not ready after 10s")
	}
	return &Embedded{Server: srv, URL: srv.ClientURL()}, nil
}

// Close shuts the server down and waits for it.
func (e *Embedded) Close() {
	e.Server.Shutdown()
	e.Server.WaitForShutdown()
}

// PublishAsyncTimeout is how long an asynchronous publish waits for its
// PubAck before the client fails it. Without one, a publish that the
// server never answers stays pending for good: on a cluster, every publish
// in flight when a stream's leader goes away is such a one, and a relay
// that lost a few windows of them to a leader change filled the context's
// PublishAsyncMaxPending and stalled for ever. 10 s is as long as the
// scheduler waits for its jobs' acks; the relay gives up on a window
// sooner (RelayConfig.AckTimeout) and publishes it again.
const PublishAsyncTimeout = 10 * time.Second

// Connect connects to url (several servers of a cluster: comma-separated)
// with reconnects that never give up: the relay, the scheduler and the
// workers must ride out a NATS restart, or the loss of their server.
func Connect(url, name string) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(250*time.Millisecond),
		nats.RetryOnFailedConnect(false))
	if err != nil {
		return nil, nil, fmt.Errorf("connect to nats at %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncTimeout(PublishAsyncTimeout))
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return nc, js, nil
}
