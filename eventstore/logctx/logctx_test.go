package logctx_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/logctx"
)

func TestContextAttributesReachTheLine(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log := slog.New(logctx.NewHandler(slog.NewJSONHandler(&buf, nil))).With("role", "api")
	ctx := logctx.With(context.Background(), "request_id", "req_1")
	a := logctx.With(ctx, "account_id", "acc_a")
	b := logctx.With(ctx, slog.String("account_id", "acc_b"))

	log.InfoContext(a, "one", "n", 1)
	log.InfoContext(b, "two")
	log.Info("no context")

	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	require.Len(t, lines, 3)
	var got []map[string]any
	for _, l := range lines {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m), l)
		got = append(got, m)
	}
	require.Equal(t, "req_1", got[0]["request_id"])
	require.Equal(t, "acc_a", got[0]["account_id"], "the branch's own id")
	require.Equal(t, "api", got[0]["role"])
	require.EqualValues(t, 1, got[0]["n"])
	require.Equal(t, "acc_b", got[1]["account_id"], "a sibling branch does not see the other's id")
	require.NotContains(t, got[2], "request_id")
	require.Less(t, strings.Index(lines[0], "request_id"), strings.Index(lines[0], `"n"`),
		"the context's ids come before the line's own attributes")
}

func TestWrappingTwiceAddsOnce(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	h := logctx.NewHandler(slog.NewTextHandler(&buf, nil))
	require.Same(t, h, logctx.NewHandler(h))
	slog.New(h).InfoContext(logctx.With(context.Background(), "order_id", "o1"), "x")
	require.Equal(t, 1, strings.Count(buf.String(), "order_id=o1"), buf.String())
	require.Nil(t, logctx.Attrs(context.Background()))
	require.Equal(t, context.Background(), logctx.With(context.Background()))
}
