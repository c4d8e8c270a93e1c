package storetest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/afterok/afterok/eventstore/bus"
)

// JetStreamCluster is a JetStream cluster of nats-server nodes running in
// the test's process, clustered over routes on free loopback ports, each
// node with a store directory and a log file of its own. Tests stop and start its nodes,
// which they must never do to the machine's shared NATS. Every node keeps
// its ports across a restart, so clients given every URL find it again.
type JetStreamCluster struct {
	name  string
	nodes []*clusterNode
}

type clusterNode struct {
	opts *server.Options
	srv  *server.Server // nil while stopped
}

// NewJetStreamCluster starts size nodes and waits until they have elected
// a JetStream meta leader, so streams can be created at once. The nodes
// are shut down when the test ends.
func NewJetStreamCluster(t testing.TB, size int) *JetStreamCluster {
	t.Helper()
	// A cluster name of its own: a node of another test's cluster that
	// reached one of these ports (ports are reused) is refused as a route.
	c := &JetStreamCluster{name: RandomName("afterok-")}
	dir := t.TempDir()
	routes := make([]string, size)
	for i := range size {
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	}
	for i := range size {
		_, routePort := splitHostPort(t, strings.TrimPrefix(routes[i], "nats://"))
		var others []string
		for j, r := range routes {
			if j != i {
				others = append(others, r)
			}
		}
		c.nodes = append(c.nodes, &clusterNode{opts: &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1), Host: "127.0.0.1", Port: freePort(t),
			JetStream: true, StoreDir: filepath.Join(dir, fmt.Sprintf("n%d", i+1)),
			NoSigs: true, MaxPayload: 8 << 20, Logtime: true, LogFile: filepath.Join(dir, fmt.Sprintf("n%d.log", i+1)),
			Cluster: server.ClusterOpts{Name: c.name, Host: "127.0.0.1", Port: routePort},
			Routes:  server.RoutesFromStr(strings.Join(others, ",")),
		}})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			if n.srv != nil {
				n.srv.Shutdown()
				n.srv.WaitForShutdown()
			}
		}
	})
	for i := range c.nodes {
		c.Start(t, i)
	}
	Poll(t, 60*time.Second, func() (bool, string) {
		leaders, current := 0, 0
		for _, n := range c.nodes {
			if n.srv.JetStreamIsLeader() {
				leaders++
			}
			if n.srv.JetStreamIsCurrent() && n.srv.NumRoutes() >= size-1 {
				current++
			}
		}
		return leaders == 1 && current == size, fmt.Sprintf("%d meta leaders, %d of %d nodes routed and current", leaders, current, size)
	})
	return c
}

// Problems returns the warnings and errors each node logged (its last n
// of them), for a failing test to show what the servers saw.
func (c *JetStreamCluster) Problems(n int) string {
	var b strings.Builder
	for _, node := range c.nodes {
		raw, err := os.ReadFile(node.opts.LogFile)
		if err != nil {
			fmt.Fprintf(&b, "%s: %v\n", node.opts.ServerName, err)
			continue
		}
		var lines []string
		for _, l := range strings.Split(string(raw), "\n") {
			// A stopped node's routes fail to reconnect every second: the
			// expected noise, left out so the rest shows.
			if (strings.Contains(l, "[ERR]") || strings.Contains(l, "[WRN]")) && !strings.Contains(l, "connect to route") {
				lines = append(lines, l)
			}
		}
		lines = lines[max(0, len(lines)-n):]
		fmt.Fprintf(&b, "%s, its last warnings and errors:\n%s\n", node.opts.ServerName, strings.Join(lines, "\n"))
	}
	return b.String()
}

// MoveLeader asks the stream's leader to step down in favour of the named
// server and waits until that server leads it: a test that stops one node
// puts the leaders it wants to see re-elected there first.
func (c *JetStreamCluster) MoveLeader(t testing.TB, nc *nats.Conn, js jetstream.JetStream, stream, serverName string, timeout time.Duration) {
	t.Helper()
	req := []byte(fmt.Sprintf(`{"placement":{"preferred":%q}}`, serverName))
	var asked time.Time
	Poll(t, timeout, func() (bool, string) {
		info, why := c.info(js, stream)
		if info == nil {
			return false, why
		}
		if info.Cluster.Leader == serverName {
			return true, ""
		}
		// Asked again only when a second passed: an election takes that.
		if time.Since(asked) < time.Second {
			return false, fmt.Sprintf("%s led by %s", stream, info.Cluster.Leader)
		}
		asked = time.Now()
		_, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, 5*time.Second)
		return false, fmt.Sprintf("%s led by %s, stepdown asked: %v", stream, info.Cluster.Leader, err)
	})
}

// URLs are the client URLs of every node, in node order.
func (c *JetStreamCluster) URLs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = fmt.Sprintf("nats://127.0.0.1:%d", n.opts.Port)
	}
	return out
}

// URL is every node's client URL, comma-separated, as NATS_URL takes them:
// a client connects to any and moves to another when its node goes.
func (c *JetStreamCluster) URL() string { return strings.Join(c.URLs(), ",") }

// Size is the number of nodes.
func (c *JetStreamCluster) Size() int { return len(c.nodes) }

// Node returns the index of the node with that server name (as a stream's
// ClusterInfo names its leader), or -1.
func (c *JetStreamCluster) Node(serverName string) int {
	for i, n := range c.nodes {
		if n.opts.ServerName == serverName {
			return i
		}
	}
	return -1
}

// Running reports whether node i is up.
func (c *JetStreamCluster) Running(i int) bool { return c.nodes[i].srv != nil }

// Stop shuts node i down the way an operator or a crashed machine takes a
// node away: its clients are disconnected and move to the others; its
// data stays for Start.
func (c *JetStreamCluster) Stop(t testing.TB, i int) {
	t.Helper()
	n := c.nodes[i]
	if n.srv == nil {
		t.Fatalf("storetest: node %d is not running", i)
	}
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
}

// Start starts node i (again) on its ports and store directory and waits
// until it accepts clients; it rejoins the cluster and catches its
// replicas up by itself.
func (c *JetStreamCluster) Start(t testing.TB, i int) {
	t.Helper()
	n := c.nodes[i]
	if n.srv != nil {
		t.Fatalf("storetest: node %d is running", i)
	}
	// NewServer fills in defaults in the options it is given.
	srv, err := server.NewServer(n.opts.Clone())
	if err != nil {
		t.Fatalf("storetest: nats node %d: %v", i, err)
	}
	srv.ConfigureLogger() // into the node's LogFile, which Problems reads
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		t.Fatalf("storetest: nats node %d not ready after 30s", i)
	}
	n.srv = srv
}

// Connect connects the test to the cluster (every URL), closed when the
// test ends.
func (c *JetStreamCluster) Connect(t testing.TB) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, js, err := bus.Connect(c.URL(), "afterok-test")
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc, js
}

// WaitCurrent waits until every replica of the stream is running and has
// caught up with its leader (after a node came back).
func (c *JetStreamCluster) WaitCurrent(t testing.TB, js jetstream.JetStream, stream string, timeout time.Duration) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	Poll(t, timeout, func() (bool, string) {
		var why string
		if info, why = c.info(js, stream); info == nil {
			return false, why
		}
		return c.current(info)
	})
	return info
}

// WaitLed waits until the stream has a leader and answers, whatever its
// replicas' state: what a client needs to use it.
func (c *JetStreamCluster) WaitLed(t testing.TB, js jetstream.JetStream, stream string, timeout time.Duration) *jetstream.StreamInfo {
	t.Helper()
	var info *jetstream.StreamInfo
	Poll(t, timeout, func() (bool, string) {
		var why string
		info, why = c.info(js, stream)
		return info != nil, why
	})
	return info
}

// Led returns the stream's info when it has a leader that answers, else
// nil and why not: WaitLed's one look, for a test that polls itself.
func (c *JetStreamCluster) Led(js jetstream.JetStream, stream string) (*jetstream.StreamInfo, string) {
	return c.info(js, stream)
}

// Current says whether every replica of the stream is running and caught
// up, and if not, which is not.
func (c *JetStreamCluster) Current(js jetstream.JetStream, stream string) (bool, string) {
	info, why := c.info(js, stream)
	if info == nil {
		return false, why
	}
	return c.current(info)
}

func (c *JetStreamCluster) info(js jetstream.JetStream, stream string) (*jetstream.StreamInfo, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, err.Error()
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err.Error()
	}
	if info.Cluster == nil || info.Cluster.Leader == "" {
		return nil, fmt.Sprintf("%s has no leader: %+v", stream, info.Cluster)
	}
	return info, ""
}

func (c *JetStreamCluster) current(info *jetstream.StreamInfo) (bool, string) {
	cl := info.Cluster
	if len(cl.Replicas) != len(c.nodes)-1 {
		return false, fmt.Sprintf("%s: cluster info %+v", info.Config.Name, cl)
	}
	for _, r := range cl.Replicas {
		if !r.Current || r.Offline || r.Lag > 0 {
			return false, fmt.Sprintf("%s replica %s: current %v, offline %v, lag %d", info.Config.Name, r.Name, r.Current, r.Offline, r.Lag)
		}
	}
	return true, ""
}
