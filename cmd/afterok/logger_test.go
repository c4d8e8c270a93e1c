package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/logctx"
)

func TestLogFormatIsTextUnlessJSONIsAsked(t *testing.T) {
	t.Parallel()
	env := func(format string) func(string) string {
		return func(k string) string {
			if k == "AFTEROK_LOG_FORMAT" {
				return format
			}
			return ""
		}
	}
	cfg, err := LoadConfig(env(""))
	require.NoError(t, err)
	require.Equal(t, "text", cfg.LogFormat, "the default stays slog's text")
	cfg, err = LoadConfig(env("json"))
	require.NoError(t, err)
	require.Equal(t, "json", cfg.LogFormat)
	_, err = LoadConfig(env("xml"))
	require.ErrorContains(t, err, `AFTEROK_LOG_FORMAT="xml": want text or json`)
}

// TestInvalidLogFormatStopsTheStart: a typo in the format is a start
// error naming the variable, not a silent fallback to text.
func TestInvalidLogFormatStopsTheStart(t *testing.T) {
	t.Setenv("AFTEROK_LOG_FORMAT", "xml")
	var stdout, stderr bytes.Buffer
	code := runContext(context.Background(), []string{"version"}, &stdout, &stderr)
	require.Equal(t, 2, code)
	require.Contains(t, stderr.String(), "AFTEROK_LOG_FORMAT")
}

func TestJSONLogLinesCarryTheContextsIDs(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(func(k string) string {
		if k == "AFTEROK_LOG_FORMAT" {
			return "json"
		}
		return ""
	})
	require.NoError(t, err)
	var buf bytes.Buffer
	log := newLogger(&buf, cfg)
	ctx := logctx.With(context.Background(), "request_id", "req_1", "account_id", "acc_1")
	log.InfoContext(ctx, "request", "status", 202)
	log.WarnContext(logctx.With(ctx, "order_id", "ord_1"), "order commit failed", "err", "x\ny")

	sc := bufio.NewScanner(&buf)
	var lines []map[string]any
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), "every line is one JSON object: %s", sc.Text())
		lines = append(lines, m)
	}
	require.Len(t, lines, 2)
	for _, m := range lines {
		require.Equal(t, "req_1", m["request_id"])
		require.Equal(t, "acc_1", m["account_id"])
		require.NotEmpty(t, m["time"])
		require.NotEmpty(t, m["level"])
	}
	require.Equal(t, "ord_1", lines[1]["order_id"])
	require.EqualValues(t, 202, lines[0]["status"])

	// Text stays the default format, ids included.
	buf.Reset()
	cfg.LogFormat = "text"
	newLogger(&buf, cfg).InfoContext(ctx, "request")
	require.True(t, strings.HasPrefix(buf.String(), "time="), buf.String())
	require.Contains(t, buf.String(), "request_id=req_1 account_id=acc_1")
}
