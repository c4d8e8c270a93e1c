package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"golang.org/x/sync/semaphore"
)

// Request bodies cost memory while they are decoded (an order's messages
// are held until it commits) and a connection while they arrive. The
// bodyGuard bounds both: the bytes of all bodies being read at once (a
// budget that a body takes on arrival and gives back when its request
// ends), and how slowly a body may arrive (a read deadline that moves on
// with every byte read, so a body trickled a byte at a time is cut while
// a large upload at a sane rate is not). Long responses (event streams)
// are not affected: only request bodies are timed, never writes.
type bodyGuard struct {
	budget  *semaphore.Weighted
	total   int64
	minRate int64 // bytes/s a body must average once grace has passed
	grace   time.Duration
	now     func() time.Time
}

// The body guard's refusals, as a handler's read of r.Body returns them.
// A handler that reads the body itself (the receipt intake) returns them
// as they are, so that the error table answers 503 and 408.
var (
	// ErrBodiesBusy: the budget for bodies in flight is spent.
	ErrBodiesBusy = errors.New("too many request bodies in flight")
	// ErrBodyTimeout: a body arrived more slowly than the minimum rate.
	ErrBodyTimeout = errors.New("request body too slow")
)

func newBodyGuard(cfg Config, now func() time.Time) *bodyGuard {
	return &bodyGuard{budget: semaphore.NewWeighted(cfg.BodyBudgetBytes), total: cfg.BodyBudgetBytes,
		minRate: cfg.BodyMinRate, grace: cfg.BodyGrace, now: now}
}

// hasBody tells requests that send a body (of a known length or chunked).
func hasBody(r *http.Request) bool {
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// admit takes the body's share of the budget (the declared length up to
// limit, or byte by byte as a chunked body arrives), starts its clock,
// and puts the guarded body in r. release gives the share back.
func (g *bodyGuard) admit(w http.ResponseWriter, r *http.Request, limit int64) (release func(), err error) {
	b := &guardedBody{body: r.Body, g: g, ctl: http.NewResponseController(w), start: g.now(), limit: limit}
	if r.ContentLength > 0 {
		n := min(r.ContentLength, limit)
		if !g.budget.TryAcquire(n) {
			return nil, g.busy()
		}
		b.held, b.prepaid = n, true
	}
	_ = b.ctl.SetReadDeadline(b.start.Add(g.grace))
	r.Body = b
	return func() {
		g.budget.Release(b.held)
		b.held = 0
	}, nil
}

func (g *bodyGuard) busy() error {
	return &detailed{kind: ErrBodiesBusy, retryAfter: time.Second,
		detail: fmt.Sprintf("the server is reading as many request bodies as it holds at once (%d MiB); retry shortly", g.total>>20)}
}

// guardedBody is a request body under the guard. Only the handler's
// goroutine reads it.
type guardedBody struct {
	body    io.ReadCloser
	g       *bodyGuard
	ctl     *http.ResponseController
	start   time.Time
	read    int64
	held    int64
	limit   int64
	prepaid bool // the declared length was taken from the budget up front
	done    bool
}

func (b *guardedBody) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if !b.prepaid {
		// A chunked body takes its share as it arrives (never more than
		// the limit: beyond it the body is refused anyway).
		want := min(int64(len(p)), b.limit-b.held)
		if want > 0 && !b.g.budget.TryAcquire(want) {
			return 0, b.g.busy()
		}
		b.held += max(want, 0)
	}
	n, err := b.body.Read(p)
	b.read += int64(n)
	switch {
	case err == io.EOF:
		// The whole body is in: lift the deadline, or it would end the
		// server's watch for a client that leaves while the request is
		// handled (the connection's background read).
		b.done = true
		_ = b.ctl.SetReadDeadline(time.Time{})
	case err != nil && errors.Is(err, os.ErrDeadlineExceeded):
		return n, &detailed{kind: ErrBodyTimeout, detail: fmt.Sprintf(
			"the body arrived too slowly: %d bytes in %s, at least %d bytes/s are needed after the first %s",
			b.read, b.g.now().Sub(b.start).Round(time.Millisecond), b.g.minRate, b.g.grace)}
	case n > 0:
		// Time allowed so far: the grace, plus what the bytes read would
		// take at the minimum rate.
		allowed := b.g.grace + time.Duration(float64(b.read)/float64(b.g.minRate)*float64(time.Second))
		_ = b.ctl.SetReadDeadline(b.start.Add(allowed))
	}
	return n, err
}

func (b *guardedBody) Close() error { return b.body.Close() }
