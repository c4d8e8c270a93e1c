package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	// streamPoll is how often the shared live tail looks for events
	// appended by other processes; appends in this process wake it at once.
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
	// Both filters apply in the query, before the limit: a page holds
	// limit matching events while there are more.
	batch, next, err := s.deps.Store.ReadAll(r.Context(), cursor, limit,
		eventstore.Filter{AccountID: f.account, Types: f.types, OrderID: f.orderID})
	if err != nil {
		return err
	}
	out := pullView{Events: []eventView{}, NextAfter: next.Position}
	for i := range batch {
		out.Events = append(out.Events, eventViewOfRecorded(&batch[i]))
	}
	return writeJSON(w, http.StatusOK, out)
}

// streamEvents sends the caller's events as Server-Sent Events: `id:` is
// the global position, `event:` the type, `data:` the event as
// GET /v1/events shows it. A new stream starts at the present; one that
// sends Last-Event-ID (or ?after=; 0 is the beginning) continues exactly
// after that event, reading what it missed from the store a page at a
// time before it joins the process's shared live tail (events_live.go).
// Comments keep idle connections alive every ?heartbeat= seconds
// (default 15). A stream whose key is revoked ends (events_revoke.go).
func (s *Server) streamEvents(w http.ResponseWriter, r *http.Request, rc *RequestContext) error {
	f, err := parseEventFilter(r, rc)
	if err != nil {
		return err
	}
	raw, _ := bearer(r)
	key := streamKey{id: rc.Principal.KeyID, raw: raw}
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
	var after *eventstore.Cursor
	if resume != "" {
		c, err := s.cursorAfter(ctx, resume, f.account)
		if err != nil {
			return err
		}
		after = &c
		rc.Log("resume_after", resume)
	}
	sub, err := s.live.subscribe(f, key.id)
	if err != nil {
		return err
	}
	defer s.live.unsubscribe(sub)

	ctl := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no") // let reverse proxies pass events through at once
	out := &sseWriter{w: w, ctl: ctl, timeout: heartbeat + 30*time.Second}
	// open answers 200. A resumed stream opens at once and catches up; a
	// new one only once it has joined the live tail, so that whatever
	// commits after the client has its 200 reaches it (an order it places
	// the moment the stream answers, say).
	open := func() error {
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(&out.buf, "retry: %d\n\n", (2 * time.Second).Milliseconds())
		return out.send()
	}
	if after != nil {
		if err := open(); err != nil {
			return nil // the client left
		}
	}
	// last is the newest event sent (or passed over by the filter): a
	// catch-up and the live tail may overlap, and only what lies after
	// last is sent, so nothing comes twice.
	var last eventstore.Cursor
	revoked := func(how string) error {
		s.endRevoked(ctx, out, rc, f, last, how)
		return nil
	}
	if after != nil {
		// Most of a long catch-up is read before joining the live tail,
		// whose buffer would otherwise fill while the store is read.
		if last, err = s.catchUp(ctx, f, key, *after, nil, out); errors.Is(err, errKeyRevoked) {
			return revoked("catch-up")
		} else if err != nil {
			return streamError(ctx, err)
		}
	}
	if s.beforeAttach != nil {
		s.beforeAttach()
	}
	from, err := s.live.attach(ctx, sub)
	if err != nil {
		return streamError(ctx, err)
	}
	// seen: for a new stream, the account's events that had committed
	// when it opened but lie past the head, which lags behind any
	// transaction open in the cluster. They are history, not news.
	var seen map[int64]bool
	if after != nil {
		if last, err = s.catchUp(ctx, f, key, last, &from, out); errors.Is(err, errKeyRevoked) {
			return revoked("catch-up")
		} else if err != nil {
			return streamError(ctx, err)
		}
	} else {
		committed, err := s.deps.Store.CommittedAfter(ctx, from, f.account, 10*liveBuffer)
		if err != nil {
			return streamError(ctx, err)
		}
		seen = make(map[int64]bool, len(committed))
		for _, p := range committed {
			seen[p] = true
		}
		if err := open(); err != nil {
			return nil // the client left
		}
	}
	beat := time.NewTicker(heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-sub.ch:
			cut := !ok
		drain:
			for ok {
				if last.Less(ev.cursor) && !seen[ev.cursor.Position] {
					out.buf.Write(ev.frame)
					last = ev.cursor
				}
				if out.buf.Len() >= 64<<10 {
					break
				}
				select {
				case ev, ok = <-sub.ch:
					cut = !ok
				default:
					break drain
				}
			}
			if err := out.send(); err != nil {
				return nil
			}
			if cut && sub.revoked != "" {
				return revoked(sub.revoked)
			}
			if cut {
				attrs := []any{"last_position", last.Position}
				if f.account != rc.Principal.AccountID { // an admin reading another account
					attrs = append(attrs, "stream_account", f.account)
				}
				s.log.InfoContext(ctx, "event stream cut: the client reads more slowly than its events arrive", attrs...)
				return nil // the client resumes with its Last-Event-ID
			}
		case <-beat.C:
			fmt.Fprintf(&out.buf, ": heartbeat %s\n\n", time.Now().UTC().Format(time.RFC3339))
			if err := out.send(); err != nil {
				return nil
			}
		}
	}
}

// catchUp sends f's events after cursor from the store, a page at a
// time. With until, it reads up to that cursor (where the live tail took
// over) and stops; without, it reads until a page comes back short, the
// store's present as far as a page can tell.
//
// It ends with errKeyRevoked at key's revocation, sending nothing after
// it, and looks the key up again at every page.
func (s *Server) catchUp(ctx context.Context, f eventFilter, key streamKey, cursor eventstore.Cursor, until *eventstore.Cursor, out *sseWriter) (eventstore.Cursor, error) {
	for until == nil || cursor.Less(*until) {
		if err := s.stillValid(ctx, key); err != nil {
			return cursor, err
		}
		// No type filter in the query: the store would drop other types
		// after reading them anyway, and an unfiltered short page is
		// proof that everything up to the horizon has been read.
		batch, next, err := s.deps.Store.ReadAll(ctx, cursor, streamBatch, eventstore.Filter{AccountID: f.account})
		if err != nil {
			return cursor, err
		}
		for i := range batch {
			e := &batch[i]
			if until != nil && until.Less(e.Cursor()) {
				break // the live tail sends it
			}
			if revokes(e, key.id) {
				return e.Cursor(), errors.Join(out.send(), errKeyRevoked)
			}
			if f.matches(e) {
				out.buf.Write(sseFrame(e))
			}
		}
		if err := out.send(); err != nil {
			return cursor, err
		}
		if until != nil && until.Less(next) {
			next = *until
		}
		cursor = next
		if len(batch) < streamBatch {
			// The page read everything below the horizon, which lies
			// beyond until: the live tail read until below an older
			// horizon, and horizons only move forward.
			return cursor, nil
		}
	}
	return cursor, nil
}

// streamError: once the stream has begun, a failure ends it (the client
// reconnects with its Last-Event-ID); a client that left is no failure.
func streamError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err // logged
}

// sseWriter sends what is buffered and flushes it through, bounding each
// write so a client that stops reading is dropped.
type sseWriter struct {
	w       http.ResponseWriter
	ctl     *http.ResponseController
	timeout time.Duration
	buf     bytes.Buffer
}

func (o *sseWriter) send() error {
	if o.buf.Len() == 0 {
		return nil
	}
	_ = o.ctl.SetWriteDeadline(time.Now().Add(o.timeout))
	if _, err := o.w.Write(o.buf.Bytes()); err != nil {
		return err
	}
	o.buf.Reset()
	return o.ctl.Flush()
}
