package webhooks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/handlers/commands/accounts"
)

// The outcomes of an attempt.
const (
	OutcomeSucceeded = "succeeded"
	OutcomeFailed    = "failed"    // another attempt follows at NextAttemptAt
	OutcomeExhausted = "exhausted" // the last of the schedule failed; replay to send again
)

// Attempt is one delivery attempt, as the attempt log keeps it.
type Attempt struct {
	Seq             int64
	EventID         uuid.UUID
	EventType       string
	StreamID        string
	Attempt         int
	StatusCode      *int
	Error           string
	DurationMS      int
	ResponseExcerpt string
	At              time.Time
	NextAttemptAt   *time.Time
	Outcome         string
}

// AttemptFilter narrows the attempt log.
type AttemptFilter struct {
	EventID *uuid.UUID
	Outcome string
}

// Attempts returns a page of the endpoint's attempts, newest first, and
// the cursor of the next page ("" at the end). An endpoint that was
// deleted still shows its log.
func (s *Service) Attempts(ctx context.Context, accountID, id string, f AttemptFilter, limit int, cursor string) ([]Attempt, string, error) {
	switch f.Outcome {
	case "", OutcomeSucceeded, OutcomeFailed, OutcomeExhausted:
	default:
		return nil, "", fmt.Errorf("%w: outcome must be succeeded, failed or exhausted", accounts.ErrInvalid)
	}
	before := int64(1<<63 - 1)
	if cursor != "" {
		n, err := strconv.ParseInt(cursor, 10, 64)
		if err != nil || n <= 0 {
			return nil, "", fmt.Errorf("%w: bad cursor", accounts.ErrInvalid)
		}
		before = n
	}
	var owner string
	err := s.store.Pool().QueryRow(ctx, `SELECT account_id FROM webhook_endpoints WHERE webhook_id = $1`, id).Scan(&owner)
	if err == pgx.ErrNoRows || err == nil && owner != accountID {
		return nil, "", fmt.Errorf("webhook %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, "", err
	}
	rows, err := s.store.Pool().Query(ctx, `-- name: webhook_attempts.list
SELECT seq, event_id, event_type, stream_id, attempt, status_code, coalesce(error, ''), duration_ms, coalesce(response_excerpt, ''),
  at, next_attempt_at, outcome
FROM webhook_attempts WHERE webhook_id = $1 AND seq < $2 AND ($3::uuid IS NULL OR event_id = $3) AND ($4 = '' OR outcome = $4)
ORDER BY seq DESC LIMIT $5`, id, before, f.EventID, f.Outcome, limit+1)
	if err != nil {
		return nil, "", err
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Attempt, error) {
		var a Attempt
		err := r.Scan(&a.Seq, &a.EventID, &a.EventType, &a.StreamID, &a.Attempt, &a.StatusCode, &a.Error, &a.DurationMS,
			&a.ResponseExcerpt, &a.At, &a.NextAttemptAt, &a.Outcome)
		a.At = a.At.UTC()
		if a.NextAttemptAt != nil {
			*a.NextAttemptAt = a.NextAttemptAt.UTC()
		}
		return a, err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		next = strconv.FormatInt(out[limit-1].Seq, 10)
	}
	return out, next, nil
}
