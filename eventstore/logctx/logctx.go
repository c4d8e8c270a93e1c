// Package logctx carries the ids of a request or a job (request_id,
// account_id, order_id, message_id, attempt, provider) in a context, and a
// slog.Handler that adds them to every record logged with that context
// (slog's *Context methods). A log line deep in a request's path then
// names its request without the ids being passed down by hand.
//
// It sits under eventstore only to be low enough for eventstore,
// projections and handlers alike; it imports nothing of afterok and must
// never decide anything: it only carries attributes.
package logctx

import (
	"context"
	"log/slog"
)

type key struct{}

// With returns a context whose log records carry args (key-value pairs or
// slog.Attr, as slog.Logger.With takes them) after those ctx already
// carries. A key set again is logged twice, so set each id once, where it
// becomes known.
func With(ctx context.Context, args ...any) context.Context {
	if len(args) == 0 {
		return ctx
	}
	add := slog.Group("", args...).Value.Group()
	old := Attrs(ctx)
	// A fresh slice: contexts branch, and two children must not share an
	// append to their parent's backing array.
	attrs := make([]slog.Attr, 0, len(old)+len(add))
	attrs = append(append(attrs, old...), add...)
	return context.WithValue(ctx, key{}, attrs)
}

// Attrs returns the attributes ctx carries (nil for none). The caller
// must not modify the slice.
func Attrs(ctx context.Context) []slog.Attr {
	if ctx == nil {
		return nil
	}
	attrs, _ := ctx.Value(key{}).([]slog.Attr)
	return attrs
}

// Handler adds the attributes of a record's context to the record, ahead
// of the record's own, then hands it to the wrapped handler.
type Handler struct{ next slog.Handler }

// NewHandler wraps next. Wrapping a Handler again returns it unchanged, so
// a role may wrap the logger it is given without doubling its attributes.
func NewHandler(next slog.Handler) *Handler {
	if h, ok := next.(*Handler); ok {
		return h
	}
	return &Handler{next: next}
}

// Enabled reports whether the wrapped handler logs at level.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle logs r with the context's attributes first: the ids read at the
// start of a line, where support looks for them.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	attrs := Attrs(ctx)
	if len(attrs) == 0 {
		return h.next.Handle(ctx, r)
	}
	out := slog.NewRecord(r.Time, r.Level, r.Message, r.PC)
	out.AddAttrs(attrs...)
	r.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(a)
		return true
	})
	return h.next.Handle(ctx, out)
}

// WithAttrs returns a Handler whose wrapped handler has attrs.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &Handler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns a Handler whose wrapped handler opens the group; the
// context's attributes then land inside it, as the record's own do.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{next: h.next.WithGroup(name)}
}

// Wrap returns l with its handler wrapped (l itself when it already is):
// for a role that must not lose the ids of its *Context lines when handed
// a plain logger, as tests do.
func Wrap(l *slog.Logger) *slog.Logger {
	if _, ok := l.Handler().(*Handler); ok {
		return l
	}
	return slog.New(NewHandler(l.Handler()))
}
