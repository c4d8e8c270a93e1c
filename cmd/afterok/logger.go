package main

import (
	"io"
	"log/slog"

	"github.com/afterok/afterok/eventstore/logctx"
)

// newLogger builds the process's one logger in the configured format. Its
// handler adds the ids a request or job carries in its context
// (logctx.With), so every role's *Context log calls name their request,
// account, order or message.
func newLogger(w io.Writer, cfg Config) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	var h slog.Handler = slog.NewTextHandler(w, opts)
	if cfg.LogFormat == "json" {
		h = slog.NewJSONHandler(w, opts)
	}
	return slog.New(logctx.NewHandler(h))
}
