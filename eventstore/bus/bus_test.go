package bus_test

import (
	"context"
	"testing"
	"time"

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
