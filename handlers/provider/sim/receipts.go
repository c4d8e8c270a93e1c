package sim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// pendingReceipt is an accepted message whose receipt is still to be sent.
type pendingReceipt struct {
	provider  *providerState
	id        string
	reference string
	attempt   int
	status    string
	errorCode string
	parts     int
	due       time.Time
}

// wireReceipt is one receipt as the sandbox protocol spells it.
type wireReceipt struct {
	ID        string `json:"id"`
	Reference string `json:"reference"`
	Attempt   int    `json:"attempt"`
	Status    string `json:"status"`
	ErrorCode string `json:"error_code,omitempty"`
	DoneAt    string `json:"done_at"`
	Part      int    `json:"part"`
	Parts     int    `json:"parts"`
}

// receipts expands a message into one receipt per segment, as real providers do
// for concatenated SMS. done_at is the due time, or now when a shutdown sends
// the receipt early (a receipt from the future would be a lie).
func (r pendingReceipt) receipts(now time.Time) []wireReceipt {
	done := r.due
	if done.After(now) {
		done = now
	}
	out := make([]wireReceipt, r.parts)
	for i := range out {
		out[i] = wireReceipt{
			ID: r.id, Reference: r.reference, Attempt: r.attempt, Status: r.status, ErrorCode: r.errorCode,
			DoneAt: done.UTC().Format(time.RFC3339Nano), Part: i + 1, Parts: r.parts,
		}
	}
	return out
}

// receiptBatch is one callback POST's worth of receipts for one provider.
type receiptBatch struct {
	provider *providerState
	receipts []wireReceipt
}

// enter registers a request that may enqueue receipts, or refuses it once the
// simulator has stopped; the caller calls s.enqueuers.Done when it has
// finished enqueueing.
func (s *Simulator) enter() bool {
	s.life.RLock()
	defer s.life.RUnlock()
	if s.stopped {
		return false
	}
	s.enqueuers.Add(1)
	return true
}

// enqueue hands a receipt to the sender. When the queue is full it waits,
// which holds the submit answer back: the client feels the backpressure
// instead of the receipt being dropped. Only a shutdown ends the wait early,
// and then the drop is counted and logged.
func (s *Simulator) enqueue(r pendingReceipt) {
	select {
	case s.queue <- r:
	case <-s.stopping:
		r.provider.stats.receiptsDropped.Add(int64(r.parts))
		s.log.Warn("receipt dropped: simulator stopping", "provider", r.provider.name, "message_id", r.reference, "attempt", r.attempt)
	}
}

// Run sends receipts until ctx ends, then stops taking submissions (they are
// answered 503), sends everything already queued (due or not) for at most
// DrainTimeout, and returns once every goroutine it started has ended. It may
// be called once.
func (s *Simulator) Run(ctx context.Context) error {
	if !s.started.CompareAndSwap(false, true) {
		return errors.New("sim: Run called twice")
	}
	// Sends outlive ctx by up to DrainTimeout, so they get a context of
	// their own that the drain deadline cancels.
	sendCtx, cancelSend := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSend()

	// Unbuffered: when every worker is busy the collector waits, the queue
	// fills, and submissions wait — backpressure all the way to the client.
	batches := make(chan receiptBatch)
	var workers sync.WaitGroup
	for range s.cfg.ReceiptWorkers {
		workers.Go(func() {
			for batch := range batches {
				if !s.deliver(sendCtx, batch) {
					s.dropped(batch, "drain deadline passed")
				}
			}
		})
	}
	b := &batcher{size: s.cfg.ReceiptBatch, flush: s.cfg.ReceiptFlush, open: make(map[*providerState]*openBatch)}
	s.collect(ctx, b, batches)

	s.life.Lock()
	s.stopped = true
	close(s.stopping)
	s.life.Unlock()
	s.enqueuers.Wait()

	deadline := time.AfterFunc(s.cfg.DrainTimeout, cancelSend)
	defer deadline.Stop()
	s.drain(sendCtx, b, batches)
	close(batches)
	workers.Wait()
	s.log.Info("provider simulator stopped", "stats", s.Stats().Counters)
	return nil
}

// collect moves receipts from the queue into batches as they fall due and
// hands full or timed-out batches to the workers, until ctx ends. Whatever it
// holds then stays in b for the drain.
func (s *Simulator) collect(ctx context.Context, b *batcher, out chan<- receiptBatch) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if b.head != nil && !b.head.due.After(now) {
			b.add(now, *b.head)
			b.head = nil
		}
		b.ready(now)
		for len(b.backlog) > 0 {
			select {
			case out <- b.backlog[0]:
				b.backlog = b.backlog[1:]
			case <-ctx.Done():
				return
			}
		}
		b.backlog = nil // release the spent array
		// Only one undue receipt is held at a time: later ones are due later.
		var queue <-chan pendingReceipt
		wake, waiting := b.nextFlush()
		if b.head == nil {
			queue = s.queue
		} else if !waiting || b.head.due.Before(wake) {
			wake, waiting = b.head.due, true
		}
		var tick <-chan time.Time
		if waiting {
			timer.Reset(time.Until(wake))
			tick = timer.C
		}
		select {
		case <-ctx.Done():
			return
		case r := <-queue:
			b.head = &r
		case <-tick:
		}
	}
}

// drain sends everything still held or queued, stopping when ctx (the drain
// deadline) ends and counting what could not be handed over as dropped.
func (s *Simulator) drain(ctx context.Context, b *batcher, out chan<- receiptBatch) {
	now := time.Now()
	if b.head != nil {
		b.add(now, *b.head)
		b.head = nil
	}
	for queued := true; queued; {
		select {
		case r := <-s.queue:
			b.add(now, r)
		default:
			queued = false
		}
	}
	b.flushAll()
	for i, batch := range b.backlog {
		select {
		case out <- batch:
		case <-ctx.Done():
			for _, rest := range b.backlog[i:] {
				s.dropped(rest, "drain deadline passed")
			}
			return
		}
	}
	b.backlog = nil
}

// earlyReceiptBudget bounds how long a …0005 submit answer waits for its
// receipt to be taken. Retrying inside the request for as long as the
// receiver is away (hours, with ReceiptMaxAge) would make the submitter
// take the whole batch for timed out.
const earlyReceiptBudget = 2 * time.Second

// deliverFirst sends a …0005 receipt before the submit is answered. The
// message is accepted by then, so if the submitter goes away meanwhile, or
// the receiver refuses for longer than earlyReceiptBudget, the receipt is
// not lost with its request: it goes to the sender's queue like any other,
// as a real provider would still report on a message it took.
func (s *Simulator) deliverFirst(ctx context.Context, r pendingReceipt) {
	ctx, cancel := context.WithTimeout(ctx, earlyReceiptBudget)
	defer cancel()
	if s.deliver(ctx, receiptBatch{provider: r.provider, receipts: r.receipts(time.Now())}) {
		return
	}
	if !s.enter() {
		r.provider.stats.receiptsDropped.Add(int64(r.parts))
		return
	}
	defer s.enqueuers.Done()
	r.due = time.Now()
	s.enqueue(r)
}

// deliver posts a batch, retrying refusals with doubling, jittered backoff
// until ReceiptMaxAge has passed since the first try (or ReceiptRetries, when
// set, ran out), and counts the outcome. It reports false, counting nothing,
// when ctx ended before the batch was handed over, so that the caller
// decides what becomes of it.
func (s *Simulator) deliver(ctx context.Context, b receiptBatch) bool {
	body, err := json.Marshal(struct {
		Receipts []wireReceipt `json:"receipts"`
	}{b.receipts})
	if err != nil {
		s.failed(b, 0, err) // cannot happen with these field types
		return true
	}
	backoff, first := s.cfg.ReceiptBackoff, time.Now()
	for try := 0; ; try++ {
		err := s.post(ctx, b.provider, body)
		switch {
		case err == nil:
			b.provider.stats.receiptsSent.Add(int64(len(b.receipts)))
			return true
		case ctx.Err() != nil:
			return false
		case s.cfg.ReceiptRetries > 0 && try >= s.cfg.ReceiptRetries, time.Since(first) >= s.cfg.ReceiptMaxAge:
			s.failed(b, try+1, err)
			return true
		}
		s.log.Debug("receipt callback refused, will retry", "provider", b.provider.name, "try", try+1, "error", err)
		wait := backoff/2 + time.Duration(rand.Int64N(int64(backoff)/2+1))
		backoff = min(2*backoff, s.cfg.ReceiptMaxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return false
		}
	}
}

// post sends one signed callback; any non-2xx answer is a refusal. It signs
// every try afresh so that a retry late in the backoff is not stale.
func (s *Simulator) post(ctx context.Context, p *providerState, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ReceiptTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.callbackURL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Sandbox-Signature", sign(p.secret, time.Now(), body))
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
		_ = resp.Body.Close()
	}()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("callback answered %s", resp.Status)
	}
	return nil
}

// sign is the provider side of the signature scheme, written independently of
// provider.VerifySignature so that tests of one against the other check the
// protocol rather than a shared helper.
func sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "."))
	mac.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func (s *Simulator) failed(b receiptBatch, tries int, err error) {
	b.provider.stats.receiptsFailed.Add(int64(len(b.receipts)))
	s.log.Error("receipts given up: callback kept refusing",
		"provider", b.provider.name, "receipts", len(b.receipts), "tries", tries, "first_message_id", b.receipts[0].Reference, "error", err)
}

func (s *Simulator) dropped(b receiptBatch, why string) {
	b.provider.stats.receiptsDropped.Add(int64(len(b.receipts)))
	s.log.Warn("receipts dropped", "provider", b.provider.name, "receipts", len(b.receipts), "reason", why)
}
