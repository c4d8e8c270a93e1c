package scheduler_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/workers/scheduler"
)

// TestStrandedLineNamesTheMessage: the line for a message queued again
// names it and its attempt through the context, with the scheduler handed
// a plain logger.
func TestStrandedLineNamesTheMessage(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := storetest.NewDB(t)
	n := storetest.NewNATS(t)
	s := eventstore.New(db.Pool)
	var logs storetest.Logs
	sc, err := scheduler.New(scheduler.Config{Store: s, JetStream: n.JS, Names: n.Names, Poll: 20 * time.Millisecond,
		StrandedAfter: 300 * time.Millisecond, StrandedEvery: 100 * time.Millisecond,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	require.NoError(t, err)
	done := make(chan struct{})
	go func() { defer close(done); _ = sc.Run(ctx) }()
	defer func() { cancel(); <-done }()

	lost := accept(t, s, time.Now().Add(time.Hour))
	storetest.Poll(t, 20*time.Second, func() (bool, string) { return len(types(t, s, lost)) == 2, "queued" })
	stream, err := n.JS.Stream(ctx, n.Names.DispatchStream())
	require.NoError(t, err)
	info, err := stream.Info(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 1, info.State.Msgs)
	require.NoError(t, stream.DeleteMsg(ctx, info.State.LastSeq)) // the job is lost

	var line map[string]any
	storetest.Poll(t, 20*time.Second, func() (bool, string) {
		line = logs.Find("stranded message queued again: its job was gone")
		return line != nil, "the stranded line"
	})
	require.Equal(t, lost, line["message_id"], "%v", line)
	require.EqualValues(t, 1, line["attempt"], "%v", line)
	require.Equal(t, "scheduler", line["role"])
	require.NotEmpty(t, line["job_seq"])
}
