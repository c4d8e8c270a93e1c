package api

import (
	"fmt"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// limiter keeps a token bucket per account. Buckets idle for longer than
// it takes to refill are dropped, so the map is bounded by the accounts
// active in the last few seconds.
type limiter struct {
	limit rate.Limit
	burst int

	mu      sync.Mutex
	buckets map[string]*bucket
	swept   time.Time
}

type bucket struct {
	l    *rate.Limiter
	seen time.Time
}

func newLimiter(perSecond float64, burst int) *limiter {
	return &limiter{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*bucket{}}
}

// wait takes a token for account, returning 0 if one was there, or how
// long until one will be.
func (l *limiter) wait(account string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	idle := time.Duration(float64(l.burst)/float64(l.limit)*float64(time.Second)) + time.Second
	if now.Sub(l.swept) > idle {
		for k, b := range l.buckets {
			if now.Sub(b.seen) > idle {
				delete(l.buckets, k)
			}
		}
		l.swept = now
	}
	b := l.buckets[account]
	if b == nil {
		b = &bucket{l: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[account] = b
	}
	b.seen = now
	r := b.l.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d
	}
	return 0
}

func rateString(perSecond float64, burst int) string {
	return fmt.Sprintf("%g requests/s (burst %d)", perSecond, burst)
}
