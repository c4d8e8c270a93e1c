package sim

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// The sandbox protocol's error codes.
const (
	codeInvalidDestination = "invalid_destination"
	codeRejected           = "rejected"
	codeUnavailable        = "unavailable"
	codeUnauthorized       = "unauthorized"
	codeInvalidRequest     = "invalid_request"
	codeNotFound           = "not_found"
)

const (
	maxSingleBody = 64 << 10
	maxBatchBody  = 8 << 20
	maxBatchItems = 1000
	maxSegments   = 255
)

// outcome is what a destination's test number makes of a submission.
type outcome int

const (
	outcomeDelivered          outcome = iota // any other number
	outcomeUndeliverable                     // …0001
	outcomeInvalidDestination                // …0002, or not a phone number
	outcomeFailFirst                         // …0003
	outcomeSilent                            // …0004
	outcomeReceiptFirst                      // …0005
	outcomeRejectedContent                   // an empty body
)

// submission is one submission as received, single or batch item.
type submission struct {
	idempotencyKey string
	reference      string
	attempt        int
	to, from, body string
	segments       int
}

func outcomeOf(s submission) outcome {
	if !isPhoneNumber(s.to) {
		return outcomeInvalidDestination
	}
	if s.body == "" {
		return outcomeRejectedContent
	}
	switch s.to[len(s.to)-4:] {
	case "0001":
		return outcomeUndeliverable
	case "0002":
		return outcomeInvalidDestination
	case "0003":
		return outcomeFailFirst
	case "0004":
		return outcomeSilent
	case "0005":
		return outcomeReceiptFirst
	}
	return outcomeDelivered
}

// isPhoneNumber accepts E.164: "+", a non-zero digit, 8 to 15 digits in all.
func isPhoneNumber(to string) bool {
	digits, ok := strings.CutPrefix(to, "+")
	if !ok || len(digits) < 8 || len(digits) > 15 || digits[0] == '0' {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// invalid says what is malformed about s, or "" if nothing is.
func (s submission) invalid() string {
	switch {
	case s.idempotencyKey == "":
		return "an idempotency key is required"
	case s.reference == "":
		return "reference is required"
	case s.attempt < 1:
		return "attempt must be at least 1"
	case s.to == "":
		return "to is required"
	case s.segments < 1 || s.segments > maxSegments:
		return "segments must be between 1 and 255"
	}
	return ""
}

// wireMessage is one message as the sandbox protocol spells it. Decoding
// refuses unknown fields so that a misspelt field in our adapter shows up as a
// test failure rather than as a silently empty value.
type wireMessage struct {
	Reference      string `json:"reference"`
	Attempt        int    `json:"attempt"`
	To             string `json:"to"`
	From           string `json:"from"`
	Body           string `json:"body"`
	Segments       int    `json:"segments"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
}

func (m wireMessage) submission(key string) submission {
	return submission{idempotencyKey: key, reference: m.Reference, attempt: m.Attempt, to: m.To, from: m.From, body: m.Body, segments: m.Segments}
}

type wireAccepted struct {
	ID        string `json:"id"`
	Status    string `json:"status"`
	Reference string `json:"reference"`
	Attempt   int    `json:"attempt"`
}

type wireError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	Retryable *bool  `json:"retryable,omitempty"` // batch items only
}

type wireBatchResult struct {
	Reference string     `json:"reference"`
	Attempt   int        `json:"attempt"`
	Status    string     `json:"status"`
	ID        string     `json:"id,omitempty"`
	Error     *wireError `json:"error,omitempty"`
}

func (s *Simulator) submitOne(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var msg wireMessage
	if !decode(w, r, maxSingleBody, &msg) {
		return
	}
	if msg.IdempotencyKey != "" {
		writeError(w, http.StatusBadRequest, codeInvalidRequest, "idempotency_key belongs in the Idempotency-Key header")
		return
	}
	sub := msg.submission(r.Header.Get("Idempotency-Key"))
	if problem := sub.invalid(); problem != "" {
		writeError(w, http.StatusBadRequest, codeInvalidRequest, problem)
		return
	}
	if !s.pause(r.Context()) {
		return // the client is gone; nothing was decided
	}
	if !s.enter() {
		p.stats.transient.Add(1)
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "the simulator is shutting down")
		return
	}
	res := s.process(p, sub)
	s.enqueuers.Done()
	if res.first != nil {
		s.deliverFirst(r.Context(), *res.first)
	}
	if res.verdict == verdictReplay {
		w.Header().Set("Idempotent-Replayed", "true")
	}
	a := res.answer
	if a.status != http.StatusOK {
		writeError(w, a.status, a.code, a.message())
		return
	}
	writeJSON(w, http.StatusOK, wireAccepted{ID: a.id, Status: "accepted", Reference: sub.reference, Attempt: sub.attempt})
}

func (s *Simulator) submitBatch(w http.ResponseWriter, r *http.Request) {
	p, ok := s.authenticate(w, r)
	if !ok {
		return
	}
	var req struct {
		Messages []wireMessage `json:"messages"`
	}
	if !decode(w, r, maxBatchBody, &req) {
		return
	}
	if n := len(req.Messages); n == 0 || n > maxBatchItems {
		writeError(w, http.StatusBadRequest, codeInvalidRequest, "a batch holds 1 to 1000 messages")
		return
	}
	if !s.pause(r.Context()) {
		return
	}
	if !s.enter() {
		p.stats.transient.Add(int64(len(req.Messages)))
		writeError(w, http.StatusServiceUnavailable, codeUnavailable, "the simulator is shutting down")
		return
	}
	results := make([]wireBatchResult, len(req.Messages))
	var firsts []pendingReceipt
	for i, msg := range req.Messages {
		sub := msg.submission(msg.IdempotencyKey)
		results[i] = wireBatchResult{Reference: sub.reference, Attempt: sub.attempt}
		if problem := sub.invalid(); problem != "" {
			results[i].Status = "failed"
			results[i].Error = &wireError{Code: codeInvalidRequest, Message: problem, Retryable: new(false)}
			continue
		}
		res := s.process(p, sub)
		if res.first != nil {
			firsts = append(firsts, *res.first)
		}
		if a := res.answer; a.status == http.StatusOK {
			results[i].Status, results[i].ID = "accepted", a.id
		} else {
			retryable := a.status >= 500
			results[i].Status = "failed"
			results[i].Error = &wireError{Code: a.code, Message: a.message(), Retryable: &retryable}
		}
	}
	s.enqueuers.Done()
	for _, pr := range firsts {
		s.deliverFirst(r.Context(), pr)
	}
	writeJSON(w, http.StatusOK, struct {
		Results []wireBatchResult `json:"results"`
	}{results})
}

// processed is the fate of one well-formed submission.
type processed struct {
	answer  answer
	verdict verdict
	// first is the …0005 receipt, which the caller must send before it
	// answers the submission.
	first *pendingReceipt
}

// process decides a submission, counts it, and queues its receipt. The
// caller must hold an enqueuers registration (see enter).
func (s *Simulator) process(p *providerState, sub submission) processed {
	o := outcomeOf(sub)
	now := time.Now()
	a, v := s.memory.claim(now, p.name, sub, o, s.newID(p))
	switch v {
	case verdictReplay:
		p.stats.replays.Add(1)
	case verdictRejected:
		p.stats.rejected.Add(1)
	case verdictTransient:
		p.stats.transient.Add(1)
	case verdictDuplicate:
		p.stats.duplicates.Add(1)
		s.log.Warn("duplicate submission: this attempt was already sent",
			"provider", p.name, "message_id", sub.reference, "attempt", sub.attempt, "idempotency_key", sub.idempotencyKey)
	}
	if v != verdictAccepted && v != verdictDuplicate {
		return processed{answer: a, verdict: v}
	}
	p.stats.submitted.Add(1)
	pr := pendingReceipt{
		provider:  p,
		id:        a.id,
		reference: sub.reference,
		attempt:   sub.attempt,
		status:    "delivered",
		parts:     sub.segments,
		due:       now.Add(s.cfg.ReceiptDelay),
	}
	switch o {
	case outcomeSilent:
		return processed{answer: a, verdict: v}
	case outcomeReceiptFirst:
		return processed{answer: a, verdict: v, first: &pr}
	case outcomeUndeliverable:
		pr.status, pr.errorCode = "undeliverable", "unknown_subscriber"
	}
	s.enqueue(pr)
	return processed{answer: a, verdict: v}
}

// authenticate finds the provider named in the path and checks the caller's
// key in constant time, so that response timing does not leak it.
func (s *Simulator) authenticate(w http.ResponseWriter, r *http.Request) (*providerState, bool) {
	p, ok := s.providers[r.PathValue("provider")]
	if !ok {
		writeError(w, http.StatusNotFound, codeNotFound, "no such provider")
		return nil, false
	}
	key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(key), p.apiKey) != 1 {
		writeError(w, http.StatusUnauthorized, codeUnauthorized, "unknown API key")
		return nil, false
	}
	return p, true
}

// pause waits SubmitLatency ± SubmitJitter; false if ctx ended first.
func (s *Simulator) pause(ctx context.Context) bool {
	d := s.cfg.SubmitLatency
	if j := s.cfg.SubmitJitter; j > 0 {
		d += time.Duration(rand.Int64N(int64(2*j)+1)) - j
	}
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func decode(w http.ResponseWriter, r *http.Request, limit int64, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, codeInvalidRequest, "unreadable request: "+err.Error())
		return false
	}
	return true
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	writeJSON(w, status, struct {
		Error wireError `json:"error"`
	}{wireError{Code: code, Message: message}})
}
