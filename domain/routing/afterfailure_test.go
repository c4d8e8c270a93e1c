package routing_test

import (
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/routing"
)

// messageAt folds a message that was accepted at t0, valid for validity,
// and is now at attempt n in state (routed or submitted), each earlier
// attempt having been retried.
func messageAt(t *testing.T, n int, state domain.MessageState, validity time.Duration) domain.Message {
	t.Helper()
	route := domain.RouteDecision{RouteID: "r", Provider: "sim-a", Reason: "test"}
	evs := []domain.Event{domain.MessageAccepted{MessageID: "m1", OrderID: "o1", AccountID: "a1", To: "+4915112345678",
		Body: "hi", Segments: 1, ExpiresAt: t0.Add(validity), At: t0}}
	for a := 1; a <= n; a++ {
		evs = append(evs, domain.MessageQueued{Attempt: a}, domain.MessageRouted{Attempt: a, Route: route})
		if a < n {
			evs = append(evs, domain.MessageRetried{Attempt: a, NextAttempt: a + 1, Failure: timeout})
		}
	}
	if state == domain.StateSubmitted {
		evs = append(evs, domain.MessageSubmitted{Attempt: n, ProviderMessageID: "p1"})
	}
	m, err := domain.LoadMessage(evs)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestAfterFailure is the retry-or-fail rule that the dispatch workers
// (routing and submission failures) and the receipt intake (delivery
// failures) both apply: the failure, the attempt budget and the validity
// decide between MessageRetried and MessageFailed.
func TestAfterFailure(t *testing.T) {
	p := routing.RetryPolicy{MaxAttempts: 3, Base: 10 * time.Second, Max: time.Minute}
	now := t0.Add(time.Minute)
	delayed := domain.Failure{Code: domain.CodeDeliveryDelayed, Reason: "handset off", Stage: domain.StageDelivery, Provider: "sim-a"}
	receipt := json.RawMessage(`{"status":"failed_temporary"}`)
	tests := []struct {
		name     string
		msg      domain.Message
		attempt  int
		failure  domain.Failure
		receipt  json.RawMessage
		wantType string
		// For MessageRetried: the window NotBefore falls in, after now.
		earliest, latest time.Duration
		// For MessageFailed: the failure recorded.
		wantCode  string
		wantStage domain.Stage
	}{
		{name: "transient submit failure retries", msg: messageAt(t, 1, domain.StateRouted, time.Hour), attempt: 1,
			failure: timeout, wantType: "MessageRetried", earliest: 5 * time.Second, latest: 10 * time.Second},
		{name: "second transient failure backs off further", msg: messageAt(t, 2, domain.StateRouted, time.Hour), attempt: 2,
			failure: timeout, wantType: "MessageRetried", earliest: 10 * time.Second, latest: 20 * time.Second},
		{name: "transient delivery failure retries with its receipt", msg: messageAt(t, 1, domain.StateSubmitted, time.Hour), attempt: 1,
			failure: delayed, receipt: receipt, wantType: "MessageRetried", earliest: 5 * time.Second, latest: 10 * time.Second},
		{name: "permanent failure is final as it is", msg: messageAt(t, 1, domain.StateRouted, time.Hour), attempt: 1,
			failure: invalid, wantType: "MessageFailed", wantCode: domain.CodeInvalidDestination, wantStage: domain.StageSubmit},
		{name: "permanent delivery failure is final", msg: messageAt(t, 1, domain.StateSubmitted, time.Hour), attempt: 1,
			failure: domain.Failure{Code: domain.CodeUndeliverable, Stage: domain.StageDelivery, Permanent: true}, receipt: receipt,
			wantType: "MessageFailed", wantCode: domain.CodeUndeliverable, wantStage: domain.StageDelivery},
		{name: "the last attempt's failure exhausts the budget", msg: messageAt(t, 3, domain.StateRouted, time.Hour), attempt: 3,
			failure: timeout, wantType: "MessageFailed", wantCode: domain.CodeAttemptsExhausted, wantStage: domain.StageSubmit},
		{name: "the last attempt's delivery failure exhausts it too", msg: messageAt(t, 3, domain.StateSubmitted, time.Hour), attempt: 3,
			failure: delayed, wantType: "MessageFailed", wantCode: domain.CodeAttemptsExhausted, wantStage: domain.StageDelivery},
		{name: "a retry that would start after the validity expires now", msg: messageAt(t, 1, domain.StateRouted, time.Minute+5*time.Second),
			attempt: 1, failure: timeout, wantType: "MessageFailed", wantCode: domain.CodeExpired, wantStage: domain.StageExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, err := p.AfterFailure(&tt.msg, tt.attempt, tt.failure, tt.receipt, now)
			if err != nil {
				t.Fatal(err)
			}
			if ev.EventType() != tt.wantType {
				t.Fatalf("event %s, want %s: %+v", ev.EventType(), tt.wantType, ev)
			}
			switch e := ev.(type) {
			case domain.MessageRetried:
				if e.Attempt != tt.attempt || e.NextAttempt != tt.attempt+1 || e.Failure != tt.failure || string(e.Receipt) != string(tt.receipt) {
					t.Errorf("retried = %+v", e)
				}
				if wait := e.NotBefore.Sub(now); wait < tt.earliest || wait > tt.latest {
					t.Errorf("next attempt after %v, want within [%v, %v]", wait, tt.earliest, tt.latest)
				}
			case domain.MessageFailed:
				f := e.Failure
				if e.Attempt != tt.attempt || f.Code != tt.wantCode || f.Stage != tt.wantStage || !f.Permanent ||
					f.Provider != tt.failure.Provider || string(e.Receipt) != string(tt.receipt) {
					t.Errorf("failed = %+v, want code %s stage %s", e, tt.wantCode, tt.wantStage)
				}
			}
			if err := tt.msg.Apply(ev); err != nil {
				t.Errorf("the decision does not fold: %v", err)
			}
		})
	}
}

// TestAfterFailureFollowsTheLifecycle: the decision is still a lifecycle
// step, refused for an attempt the message moved past or a final message.
func TestAfterFailureFollowsTheLifecycle(t *testing.T) {
	p := routing.DefaultRetryPolicy()
	m := messageAt(t, 2, domain.StateRouted, time.Hour)
	if _, err := p.AfterFailure(&m, 1, timeout, nil, t0); !errors.Is(err, domain.ErrStaleAttempt) {
		t.Errorf("failure of attempt 1 at attempt 2: %v, want ErrStaleAttempt", err)
	}
	ev, err := p.AfterFailure(&m, 2, invalid, nil, t0)
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Apply(ev); err != nil {
		t.Fatal(err)
	}
	if _, err := p.AfterFailure(&m, 2, timeout, nil, t0); !errors.Is(err, domain.ErrFinalState) {
		t.Errorf("failure after a final state: %v, want ErrFinalState", err)
	}
}
