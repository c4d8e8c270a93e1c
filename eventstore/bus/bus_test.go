package bus_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/bus"
	"github.com/afterok/afterok/eventstore/storetest"
)

func TestStreamsAndSubjects(t *testing.T) {
	n := storetest.NewNATS(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	subj := n.Names.EventSubject("ACC1", "message", "MessageQueued")
	require.Equal(t, n.Names.Prefix+".events.ACC1.message.MessageQueued", subj)
	require.Equal(t, n.Names.Prefix+".events._.order.x_y", n.Names.EventSubject("", "order", "x.y"))
	ack, err := n.JS.Publish(ctx, subj, []byte("{}"))
	require.NoError(t, err)
	require.Equal(t, n.Names.EventsStream(), ack.Stream)
	ack, err = n.JS.Publish(ctx, n.Names.DispatchSubject("01ABC"), []byte("{}"))
	require.NoError(t, err)
	require.Equal(t, n.Names.DispatchStream(), ack.Stream)
	require.Equal(t, n.Names.DispatchSubject("01ABC"), n.Names.DispatchSubject("01ABC"), "a message's jobs keep their shard")
	// EnsureStreams is repeatable.
	require.NoError(t, bus.EnsureStreams(ctx, n.JS, n.Names, bus.StreamConfig{}))
}

// TestThreeReplicasOnACluster: EnsureStreams with three replicas on a
// three-node cluster puts each stream on every node; with its leader
// stopped, the stream elects another and keeps taking publishes (and
// still drops a repeated Nats-Msg-Id); the stopped node catches up once it
// is back.
func TestThreeReplicasOnACluster(t *testing.T) {
	c := storetest.NewJetStreamCluster(t, 3)
	_, js := c.Connect(t)
	names := bus.Names{Prefix: strings.ToLower(storetest.RandomName("t"))}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(t, bus.EnsureStreams(ctx, js, names, bus.StreamConfig{Replicas: 3, EventsMaxBytes: storetest.TestEventsMaxBytes}))
	for _, s := range []string{names.EventsStream(), names.DispatchStream()} {
		info := c.WaitCurrent(t, js, s, time.Minute)
		require.Equal(t, 3, info.Config.Replicas, s)
	}
	publish := func(id string) *jetstream.PubAck {
		var ack *jetstream.PubAck
		storetest.Poll(t, time.Minute, func() (bool, string) { // a leader election takes a few seconds
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			var err error
			ack, err = js.Publish(pctx, names.DispatchSubject(id), []byte(id), jetstream.WithMsgID(id))
			return err == nil, fmt.Sprint(err)
		})
		return ack
	}
	publish("a")
	info := c.WaitCurrent(t, js, names.DispatchStream(), time.Minute)
	leader := c.Node(info.Cluster.Leader)
	require.GreaterOrEqual(t, leader, 0, "leader %q", info.Cluster.Leader)
	c.Stop(t, leader)

	require.False(t, publish("b").Duplicate)
	require.True(t, publish("a").Duplicate, "the duplicate window survives the leader")
	c.Start(t, leader)
	info = c.WaitCurrent(t, js, names.DispatchStream(), time.Minute)
	require.Equal(t, uint64(2), info.State.Msgs)
}

// TestUnansweredPublishFails: an asynchronous publish that the server
// never answers (on a cluster, one in flight when its stream's leader
// goes) fails after PublishAsyncTimeout instead of staying pending for
// good. Pending ones count against the context's PublishAsyncMaxPending:
// a relay that lost a few windows to a leader change stalled for ever.
func TestUnansweredPublishFails(t *testing.T) {
	t.Parallel() // it spends its time waiting for the timeout
	n := storetest.NewEmbeddedNATS(t)
	nc, js, err := bus.Connect(n.URL, "afterok-test")
	require.NoError(t, err)
	defer nc.Close()
	// A subscriber that takes the message and never replies: the publish's
	// request is neither answered nor refused with "no responders".
	sub, err := nc.SubscribeSync(n.Names.Prefix + ".unanswered")
	require.NoError(t, err)
	defer sub.Unsubscribe()
	f, err := js.PublishAsync(n.Names.Prefix+".unanswered", []byte("x"))
	require.NoError(t, err)
	select {
	case err := <-f.Err():
		require.ErrorIs(t, err, jetstream.ErrAsyncPublishTimeout)
	case <-f.Ok():
		t.Fatal("acknowledged by nobody")
	case <-time.After(bus.PublishAsyncTimeout + 20*time.Second):
		t.Fatalf("still pending after %s", bus.PublishAsyncTimeout+20*time.Second)
	}
	require.Zero(t, js.PublishAsyncPending())
}
