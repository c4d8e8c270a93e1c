package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// The caller's events by global position: pulled a page at a time
// (GET /v1/events) or pushed as Server-Sent Events (GET /v1/events/stream).
//
// Both read the store's gap-safe tail restricted to the caller's account,
// so an event that commits late is never skipped. A client holds on to a
// position (the last event it handled); the store maps it back to the
// exact tail cursor (Store.CursorAt), so resuming misses nothing and
// repeats nothing. Positions rise in tail order, but the tail orders by
// transaction, so within one stream a later version can come first: each
// event carries its stream and version for clients that need stream order.

const (
	maxPull          = 1000
	defaultPull      = 100
	streamBatch      = 500
	defaultHeartbeat = 15 * time.Second
	// streamPoll is how often an idle stream looks for events appended by
	// other processes; appends in this process wake it at once.
	streamPoll = 250 * time.Millisecond
)

// eventFilter is what the pull and stream endpoints filter by.
type eventFilter struct {
	account string
	types   []string
	orderID string
}

func parseEventFilter(r *http.Request, rc *RequestContext) (eventFilter, error) {
	account, err := listAccount(r, rc.Principal)
	if err != nil {
		return eventFilter{}, err
	}
	f := eventFilter{account: account, orderID: r.URL.Query().Get("order_id")}
	known := domain.EventTypes()
	for _, v := range r.URL.Query()["type"] {
		for _, t := range strings.Split(v, ",") {
			if t = strings.TrimSpace(t); t == "" {
				continue
			}
			if !slices.Contains(known, t) {
				slices.Sort(known)
				return eventFilter{}, fail(errInvalidRequest, "unknown event type %q (known: %s)", t, strings.Join(known, ", "))
			}
			f.types = append(f.types, t)
		}
	}
	return f, nil
}

func (f eventFilter) keep(e *eventstore.RecordedEvent) bool {
	return f.orderID == "" || e.Metadata.CorrelationID == f.orderID
}

// cursorAfter maps a client's position to the tail cursor just after it.
// Position 0 is the beginning; any other must be one of the account's
// events (anything else is refused the same way, revealing nothing).
func (s *Server) cursorAfter(ctx context.Context, raw, account string) (eventstore.Cursor, error) {
	if raw == "" || raw == "0" {
		return eventstore.Cursor{}, nil
	}
	pos, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || pos < 0 {
		return eventstore.Cursor{}, fail(errInvalidRequest, "a position is a non-negative integer, not %q", raw)
	}
	c, ok, err := s.deps.Store.CursorAt(ctx, pos, account)
	if err != nil {
		return eventstore.Cursor{}, err
	}
	if !ok {
		return eventstore.Cursor{}, fail(errInvalidRequest, "position %d is not one of this account's events", pos)
	}
	return c, nil
}

func eventViewOfRecorded(e *eventstore.RecordedEvent) eventView {
	md, _ := json.Marshal(e.Metadata) // a struct of strings
	return eventView{Position: e.Position, Stream: e.StreamID, Version: e.Version, ID: e.ID.String(), Type: e.Type,
		SchemaVersion: e.SchemaVersion, RecordedAt: e.RecordedAt.UTC(), Data: e.Data, Metadata: md}
}

type pullView struct {
	Events []eventView `json:"events"`
	// NextAfter is the position to pass as after next time. It can lie
	// past the last event returned when the page scanned further without
	// a match.
	NextAfter int64 `json:"next_after"`
}

func (s *Server) pullEvents(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	f, err := parseEventFilter(r, rc)
	if err != nil {
		return err
	}
	limit := defaultPull
	if raw := r.URL.Query().Get("limit"); raw != "" {
		if limit, err = strconv.Atoi(raw); err != nil || limit < 1 || limit > maxPull {
			return fail(errInvalidRequest, "limit must be a number from 1 to %d", maxPull)
		}
	}
	after := r.URL.Query().Get("after")
	cursor, err := s.cursorAfter(r.Context(), after, f.account)
	if err != nil {
		return err
	}
	batch, next, err := s.deps.Store.ReadAll(r.Context(), cursor, limit, eventstore.Filter{AccountID: f.account, Types: f.types})
	if err != nil {
		return err
	}
	out := pullView{Events: []eventView{}, NextAfter: next.Position}
	for i := range batch {
		if f.keep(&batch[i]) {
			out.Events = append(out.Events, eventViewOfRecorded(&batch[i]))
		}
	}
	return writeJSON(w, http.StatusOK, out)
}

// streamEvents sends the caller's events as Server-Sent Events: `id:` is
// the global position, `event:` the type, `data:` the event as
// GET /v1/events shows it. A reconnecting client sends Last-Event-ID (or
// ?after=) and continues exactly after that event. Comments keep idle
// connections alive every ?heartbeat= seconds (default 15).
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	f, err := parseEventFilter(r, rc)
	if err != nil {
		return err
	}
	heartbeat := defaultHeartbeat
	if raw := r.URL.Query().Get("heartbeat"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil || n < 1 || n > 300 {
			return fail(errInvalidRequest, "heartbeat must be a number of seconds from 1 to 300")
		}
		heartbeat = time.Duration(n) * time.Second
	}
	resume := r.Header.Get("Last-Event-ID")
	if resume == "" {
		resume = r.URL.Query().Get("after")
	}
	ctx := r.Context()
	cursor, err := s.cursorAfter(ctx, resume, f.account)
	if err != nil {
		return err
	}
	rc.Log("resume_after", resume)

	ctl := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // let reverse proxies pass events through at once
	w.WriteHeader(http.StatusOK)
	var buf bytes.Buffer
	send := func() error {
		_ = ctl.SetWriteDeadline(time.Now().Add(heartbeat + 30*time.Second))
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
		buf.Reset()
		return ctl.Flush()
	}
	fmt.Fprintf(&buf, "retry: %d\n\n", (2 * time.Second).Milliseconds())
	if err := send(); err != nil {
		return nil // the client left
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	poll := time.NewTimer(streamPoll)
	defer poll.Stop()
	for {
		changed := s.deps.Store.Changed()
		batch, next, err := s.deps.Store.ReadAll(ctx, cursor, streamBatch, eventstore.Filter{AccountID: f.account, Types: f.types})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err // logged; the client reconnects with its Last-Event-ID
		}
		for i := range batch {
			e := &batch[i]
			if !f.keep(e) {
				continue
			}
			data, _ := json.Marshal(eventViewOfRecorded(e))
			fmt.Fprintf(&buf, "id: %d\nevent: %s\ndata: %s\n\n", e.Position, e.Type, data)
		}
		cursor = next
		if buf.Len() > 0 {
			if err := send(); err != nil {
				return nil
			}
		}
		if len(batch) == streamBatch {
			continue
		}
		poll.Reset(streamPoll)
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		case <-poll.C:
		case <-beat.C:
			fmt.Fprintf(&buf, ": heartbeat %s\n\n", time.Now().UTC().Format(time.RFC3339))
			if err := send(); err != nil {
				return nil
			}
		}
	}
}
