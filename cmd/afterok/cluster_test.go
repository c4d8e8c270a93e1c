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
//
// Each partition of a tail consumer must be processed by exactly one
// process at a time. What fails when it is not:
//
//   - By none (a partition left unowned, or its owner stalled): checkShared
//     finds a partition without a live lease; the kill test's takeover poll
//     finds the survivor not holding every partition within 10 s; and the
//     events of that partition are never handled, so waitOrdersCompleted
//     times out (scheduler, tracker) and checkCallbacks finds owed
//     callbacks that never came (the webhooks fan-out).
//   - By two at once (a process that lost its lease still working, or two
//     holding it): the scheduler queues a job twice and the dispatch
//     workers submit it twice, which the simulator counts
//     (checkInvariants: DuplicateSubmissions); the tracker ends a message
//     twice (checkInvariants: exactly one final event a message); a
//     projector applies an event twice, which `afterok verify
//     --projections` finds against a fresh fold; and the fan-out sends an
//     event's callback twice (checkCallbacks with exactlyOnce, in the runs
//     where no process dies) or under two webhook-ids (every run).
//   - Work not shared (one process holding everything): checkShared
//     requires both processes to own partitions of every consumer.

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
	c.checkShared(30 * time.Second)
	c.checkRevocationAcrossProcesses()
	c.checkEveryTestNumber(2 * time.Minute)
	c.step("every test number's promise checked, verified")
	c.checkCallbacks(time.Minute, true)
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
	c.checkShared(30 * time.Second)
	c.step("load submitted, the victim is submitting and holds partitions of every consumer")
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
	// The victim died with callbacks claimed or sent and not recorded:
	// they come again (after the 15 s lease), under the same webhook-id.
	c.checkCallbacks(time.Minute, false)
}

// TestClusterSurvivesAStoppedNATSNode stops the JetStream node that leads
// both streams (the dispatch stream's leader is moved to the events
// stream's first) while messages are in flight. Both streams elect a
// leader among the two nodes left and keep serving: the run completes with
// the node away, and the events stream then holds every stored event
// exactly once. Then the node comes back, and whether it caught up is
// reported.
func TestClusterSurvivesAStoppedNATSNode(t *testing.T) {
	c := newClusterHarness(t)
	nc, js := c.js.Connect(t)
	c.checkReplicated(js, time.Minute)
	events, dispatch := strings.ToUpper(c.prefix)+"_EVENTS", strings.ToUpper(c.prefix)+"_DISPATCH"
	leader := c.js.WaitCurrent(t, js, events, time.Minute).Cluster.Leader
	c.js.MoveLeader(t, nc, js, dispatch, leader, 30*time.Second)
	node := c.js.Node(leader)
	require.GreaterOrEqual(t, node, 0, "leader %q", leader)
	load := c.submitOutageLoad(20, clusterExpiringValidity)
	c.waitSubmitted(300)
	open := c.openMessages(load.orders)
	require.Positive(t, open, "the load is still in flight when the node stops")
	c.step(fmt.Sprintf("load submitted, %d messages open, %s, which leads both streams, stopping", open, leader))
	c.js.Stop(t, node)

	c.waitOrdersCompleted(3*time.Minute, load.orders...)
	c.step("every order completed")
	c.checkPromises(load)
	c.step("promises checked, verified")

	// The events stream, led by a node that stayed, holds every stored
	// event exactly once: the relay's publishes across the leader change
	// and its restarts after rejections were neither lost nor doubled. A
	// stream that stopped serving (no leader, or a leader that does not
	// answer) fails here: it once did, for good, when the relay's ordering
	// guard made both remaining replicas stop the stream (eventstore/relay.go).
	var stored uint64
	storetest.Poll(t, time.Minute, func() (bool, string) {
		require.NoError(t, c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FROM events`).Scan(&stored))
		info, why := c.js.Led(js, events)
		if info == nil {
			return false, why + "\n" + c.js.Problems(5)
		}
		require.LessOrEqual(t, info.State.Msgs, stored, "an event is in %s twice", events)
		return info.State.Msgs == stored, fmt.Sprintf("%s holds %d of the %d stored events", events, info.State.Msgs, stored)
	})
	require.NotEqual(t, leader, c.js.WaitLed(t, js, dispatch, 10*time.Second).Cluster.Leader, "the dispatch stream moved")
	c.step("every stored event is in the events stream once, with the node away")
	c.checkCallbacks(time.Minute, true)

	// The node comes back. Its catching up is nats-server's business, not
	// afterok's: it is reported, not required.
	c.js.Start(t, node)
	for _, s := range []string{events, dispatch} {
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

// TestClusterSurvivesDroppedDatabaseConnections ends every PostgreSQL
// session of both processes (pg_terminate_backend, as a failover or an
// operator does) while messages are in flight: their transactions, lease
// renewals and tail reads are cut in both at once. Both reconnect and
// share the partitions again, the run completes as its numbers promise,
// and every owed callback arrives (a batch cut before its commit is sent
// again, under the same webhook-id).
func TestClusterSurvivesDroppedDatabaseConnections(t *testing.T) {
	c := newClusterHarness(t)
	c.checkShared(30 * time.Second)
	load := c.submitOutageLoad(10, clusterExpiringValidity)
	c.waitSubmitted(200)
	open := c.openMessages(load.orders)
	require.Positive(t, open, "the load is still in flight when the sessions end")
	var ended int
	require.NoError(t, c.db.Pool.QueryRow(context.Background(), `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).Scan(&ended))
	require.Positive(t, ended)
	c.step(fmt.Sprintf("%d sessions ended with %d messages open", ended, open))
	load.add(c.submitOutageLoad(10, clusterExpiringValidity))
	c.waitOrdersCompleted(3*time.Minute, load.orders...)
	c.step("every order completed")
	c.checkPromises(load)
	c.step("promises checked, verified")
	c.checkShared(30 * time.Second)
	c.checkCallbacks(time.Minute, false)
}
