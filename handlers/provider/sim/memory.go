package sim

import (
	"sync"
	"time"
)

// answer is the simulator's first answer to an idempotency key, kept so that
// a replay returns it unchanged. It is kept small (the message text is derived
// from code) because one lives for every submission inside the window.
type answer struct {
	status int    // HTTP status of the original answer
	id     string // provider message id, when accepted
	code   string // protocol error code, when not
}

// message is the human text sent with a refusal.
func (a answer) message() string {
	switch a.code {
	case codeInvalidDestination:
		return "the destination cannot receive SMS"
	case codeRejected:
		return "the message body is empty"
	case codeUnavailable:
		return "test number …0003: the first submission of a reference fails"
	}
	return ""
}

// verdict is what one submission turned out to be.
type verdict int

const (
	verdictAccepted  verdict = iota // a new send
	verdictDuplicate                // a new send of a (reference, attempt) already sent
	verdictReplay                   // a known idempotency key: the first answer again
	verdictRejected                 // refused for good, remembered for replays
	verdictTransient                // refused for now, not remembered: retrying may succeed
)

type answerKey struct{ provider, idempotencyKey string }

type sendKey struct {
	reference string
	attempt   int
}

// expiry says when the entries one claim added are forgotten.
type expiry struct {
	at        int64 // Unix nanoseconds: half a time.Time, and there is one per submission
	answer    answerKey
	hasAnswer bool
	send      sendKey
	hasSend   bool
	failedRef string
}

// memory is everything the simulator remembers about recent submissions.
// Entries live for window and are forgotten in insertion order, which is also
// expiry order because the window is fixed; so a FIFO of expiries is all the
// eviction needs, and memory stays proportional to the submissions inside the
// window however long the simulator runs.
//
// Idempotency is per provider, like a real provider's; duplicate detection is
// across all providers, because sending the same attempt through sim-a and
// then sim-b puts the SMS on the handset twice just the same.
type memory struct {
	mu     sync.Mutex
	window time.Duration
	// answers: (provider, idempotency key) → the first answer.
	answers map[answerKey]answer
	// sends: every (reference, attempt) accepted, by any provider.
	sends map[sendKey]struct{}
	// failedOnce: references whose first …0003 submission already failed.
	failedOnce map[string]struct{}
	expiries   []expiry
	head       int
}

func newMemory(window time.Duration) *memory {
	return &memory{
		window:     window,
		answers:    make(map[answerKey]answer),
		sends:      make(map[sendKey]struct{}),
		failedOnce: make(map[string]struct{}),
	}
}

// claim decides, atomically, what a submission is and what it is answered.
// Deciding and remembering under one lock is what makes two concurrent
// requests with the same key come out as one send and one replay.
func (m *memory) claim(now time.Time, provider string, sub submission, o outcome, newID string) (answer, verdict) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.evict(now)

	ak := answerKey{provider, sub.idempotencyKey}
	if a, ok := m.answers[ak]; ok {
		return a, verdictReplay
	}
	e := expiry{at: now.Add(m.window).UnixNano(), answer: ak, hasAnswer: true}
	switch o {
	case outcomeInvalidDestination:
		a := answer{status: 400, code: codeInvalidDestination}
		m.answers[ak] = a
		m.expiries = append(m.expiries, e)
		return a, verdictRejected
	case outcomeRejectedContent:
		a := answer{status: 422, code: codeRejected}
		m.answers[ak] = a
		m.expiries = append(m.expiries, e)
		return a, verdictRejected
	case outcomeFailFirst:
		if _, failed := m.failedOnce[sub.reference]; !failed {
			m.failedOnce[sub.reference] = struct{}{}
			m.expiries = append(m.expiries, expiry{at: e.at, failedRef: sub.reference})
			return answer{status: 503, code: codeUnavailable}, verdictTransient
		}
	}
	a := answer{status: 200, id: newID}
	m.answers[ak] = a
	v := verdictAccepted
	sk := sendKey{sub.reference, sub.attempt}
	if _, sent := m.sends[sk]; sent {
		v = verdictDuplicate
	} else {
		m.sends[sk] = struct{}{}
		e.send, e.hasSend = sk, true
	}
	m.expiries = append(m.expiries, e)
	return a, v
}

func (m *memory) evict(now time.Time) {
	cutoff := now.UnixNano()
	for m.head < len(m.expiries) && m.expiries[m.head].at <= cutoff {
		e := m.expiries[m.head]
		if e.hasAnswer {
			delete(m.answers, e.answer)
		}
		if e.hasSend {
			delete(m.sends, e.send)
		}
		if e.failedRef != "" {
			delete(m.failedOnce, e.failedRef)
		}
		m.expiries[m.head] = expiry{} // let the strings go
		m.head++
	}
	// Compact once half the slice is spent: each entry is copied at most
	// once per compaction it survives, so eviction stays O(1) amortized and
	// the backing array never outgrows the peak number of live entries.
	if m.head > 0 && m.head*2 >= len(m.expiries) {
		n := copy(m.expiries, m.expiries[m.head:])
		clear(m.expiries[n:])
		m.expiries = m.expiries[:n]
		m.head = 0
	}
}

// size counts live entries, for tests and for a look at memory use.
func (m *memory) size() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.answers) + len(m.sends) + len(m.failedOnce) + len(m.expiries) - m.head
}
