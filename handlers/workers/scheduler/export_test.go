package scheduler

import "context"

// QueueRound, ExpireRound and Follow let tests drive the scheduler's loops
// one round at a time, under a clock they set.
func (s *Scheduler) QueueRound(ctx context.Context) (int, error)  { return s.queueRound(ctx) }
func (s *Scheduler) ExpireRound(ctx context.Context) (int, error) { return s.expireRound(ctx) }
func (s *Scheduler) Follow(ctx context.Context) error             { return s.follow(ctx) }
