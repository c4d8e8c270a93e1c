package receipts

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/afterok/afterok/domain"
)

const (
	parkedOfSQL = `SELECT DISTINCT message_id FROM receipts
WHERE disposition = 'parked' AND message_id = ANY($1::text[])`

	// sweepSQL finds parked receipts whose message stream moved since they
	// were last decided: the parked partial index, then one streams primary
	// key probe each. A receipt still waiting is not looked at again until
	// its message changes, so a few long-parked receipts cost nothing.
	sweepSQL = `SELECT DISTINCT r.message_id FROM receipts r
JOIN streams s ON s.stream_id = $1 || r.message_id
WHERE r.disposition = 'parked' AND s.version > r.checked_version
LIMIT $2`

	countParkedSQL = `SELECT count(*) FROM receipts WHERE disposition = 'parked'`

	oldestParkedSQL = `SELECT id, provider, provider_message_id, message_id, attempt, part, parts, status, raw, received_at
FROM receipts WHERE disposition = 'parked' ORDER BY received_at, id LIMIT $1`
)

// sweepBatch is how many messages one sweeper transaction settles, and
// sweepRounds how many batches one Sweep call takes at most, so that a
// backlog is worked off in bounded transactions without starving the
// interval's other work.
const (
	sweepBatch  = 200
	sweepRounds = 50
)

// ApplyParked applies the parked receipts of messageIDs whose submission
// is now recorded. Dispatch workers call it right after appending
// MessageSubmitted; for a message with nothing parked (nearly always) it
// is one index probe. A receipt whose message moved on instead (a final
// state, a later attempt) is resolved as ignored.
func (in *Intake) ApplyParked(ctx context.Context, messageIDs []string) error {
	_, err := in.applyParked(ctx, messageIDs)
	return err
}

func (in *Intake) applyParked(ctx context.Context, messageIDs []string) (int, error) {
	if len(messageIDs) == 0 {
		return 0, nil
	}
	rows, err := in.pool.Query(ctx, parkedOfSQL, messageIDs)
	if err != nil {
		return 0, fmt.Errorf("find parked receipts: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, fmt.Errorf("find parked receipts: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("find parked receipts: %w", err)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	s, err := in.settle(ctx, nil, nil, ids, "")
	if err != nil {
		return 0, err
	}
	in.report(ctx, s, "")
	n := 0
	for _, e := range s.unparked {
		if e.disposition != Parked {
			n++
		}
	}
	return n, nil
}

// Sweep applies parked receipts whose message moved since they were
// parked, wherever the move came from. It covers a worker that crashed
// between appending MessageSubmitted and calling ApplyParked, and a
// message that became final while a receipt waited. It returns how many
// parked receipts it resolved and refreshes the parked gauge.
func (in *Intake) Sweep(ctx context.Context) (int, error) {
	total := 0
	for range sweepRounds {
		ids, err := in.sweepCandidates(ctx)
		if err != nil {
			return total, err
		}
		if len(ids) == 0 {
			break
		}
		n, err := in.applyParked(ctx, ids)
		total += n
		if err != nil {
			return total, err
		}
	}
	var parked int64
	if err := in.pool.QueryRow(ctx, countParkedSQL).Scan(&parked); err != nil {
		return total, fmt.Errorf("count parked receipts: %w", err)
	}
	in.metrics.parked.Set(float64(parked))
	return total, nil
}

func (in *Intake) sweepCandidates(ctx context.Context) ([]string, error) {
	rows, err := in.pool.Query(ctx, sweepSQL, domain.MessageStream(""), sweepBatch)
	if err != nil {
		return nil, fmt.Errorf("find movable parked receipts: %w", err)
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("find movable parked receipts: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("find movable parked receipts: %w", err)
	}
	return ids, nil
}

// RunSweeper calls Sweep at once and then every interval until ctx ends,
// logging (not returning) the errors of a round, and returns nil once ctx
// has ended. The caller owns the goroutine it runs on.
func (in *Intake) RunSweeper(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("receipts: sweeper interval must be positive, got %v", interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := in.Sweep(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			in.log.Error("receipt sweep failed", "err", err, "resolved", n)
		case n > 0:
			in.log.Info("receipt sweep resolved parked receipts", "resolved", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// ParkedReceipt is a receipt waiting for its message's submission.
type ParkedReceipt struct {
	ID                int64           `json:"id"`
	Provider          string          `json:"provider"`
	ProviderMessageID string          `json:"provider_message_id"`
	MessageID         string          `json:"message_id"`
	Attempt           int             `json:"attempt"`
	Part              int             `json:"part"`
	Parts             int             `json:"parts"`
	Status            string          `json:"status"`
	Raw               json.RawMessage `json:"raw"`
	ReceivedAt        time.Time       `json:"received_at"`
}

// Parked returns the oldest receipts still parked, at most limit (100 when
// limit is not positive), for support: a receipt parked for long points at
// a submission that was never recorded.
func (in *Intake) Parked(ctx context.Context, limit int) ([]ParkedReceipt, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := in.pool.Query(ctx, oldestParkedSQL, limit)
	if err != nil {
		return nil, fmt.Errorf("parked receipts: %w", err)
	}
	defer rows.Close()
	var out []ParkedReceipt
	for rows.Next() {
		var p ParkedReceipt
		var raw []byte
		if err := rows.Scan(&p.ID, &p.Provider, &p.ProviderMessageID, &p.MessageID, &p.Attempt, &p.Part, &p.Parts,
			&p.Status, &raw, &p.ReceivedAt); err != nil {
			return nil, fmt.Errorf("parked receipts: %w", err)
		}
		p.Raw = raw
		out = append(out, p)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("parked receipts: %w", err)
	}
	return out, nil
}
