package callbacks

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// lockOwedSQL locks, in key order, the deliveries still owed of the
// (webhook, stream)s a batch adds to: a recorder finishing one of them
// waits for the batch to commit, and then sees its rows when it makes the
// next one ready (record.go); both lock in the same order, so neither
// deadlocks the other.
const lockOwedSQL = `-- name: webhooks.lock_owed
SELECT 1 FROM webhook_deliveries d
JOIN (SELECT DISTINCT w.webhook_id, u.stream_id
      FROM unnest($1::text[], $2::text[], $3::text[], $4::timestamptz[]) AS u(account_id, stream_id, type, recorded_at)
      JOIN webhook_endpoints w ON w.account_id = u.account_id AND w.enabled AND w.deleted_at IS NULL
           AND w.created_at <= u.recorded_at AND u.type = ANY(w.event_types)) k
  ON d.webhook_id = k.webhook_id AND d.stream_id = k.stream_id
ORDER BY d.webhook_id, d.stream_id, d.position
FOR UPDATE OF d`

// fanOutSQL matches a batch of events to their accounts' enabled
// endpoints by type, and owes each endpoint a delivery of each match: one
// statement per batch, whatever its size. An endpoint gets the events
// recorded after it was created. The first delivery of a (webhook,
// stream) is ready when nothing of that pair is still owed. A delivery
// already owed (a replay got there first) is not owed twice.
const fanOutSQL = `-- name: webhooks.fan_out
INSERT INTO webhook_deliveries (webhook_id, stream_id, position, event_id, event_type, next_attempt_at, ready)
SELECT m.webhook_id, m.stream_id, m.position, m.event_id, m.type, now(),
       m.rn = 1 AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.webhook_id = m.webhook_id AND d.stream_id = m.stream_id)
FROM (SELECT w.webhook_id, u.stream_id, u.position, u.event_id, u.type,
             row_number() OVER (PARTITION BY w.webhook_id, u.stream_id ORDER BY u.position) AS rn
      FROM unnest($1::text[], $2::text[], $3::bigint[], $4::uuid[], $5::text[], $6::timestamptz[])
           AS u(account_id, stream_id, position, event_id, type, recorded_at)
      JOIN webhook_endpoints w ON w.account_id = u.account_id AND w.enabled AND w.deleted_at IS NULL
           AND w.created_at <= u.recorded_at AND u.type = ANY(w.event_types)) m
ORDER BY m.position
ON CONFLICT DO NOTHING`

// fanOut is the consumer that owes deliveries. It is partitioned by
// stream (the default key), so one stream's events are fanned out in
// order, and its deliveries commit with its checkpoint.
func (d *Deliverer) fanOut() eventstore.Consumer {
	return eventstore.Consumer{
		Name: "webhooks", BatchSize: d.cfg.BatchSize, Logger: d.log, Linger: 5 * time.Millisecond,
		Filter: eventstore.Filter{Types: domain.WebhookEventTypes()},
		Handle: func(ctx context.Context, tx *eventstore.Tx, batch []eventstore.RecordedEvent) error {
			n := len(batch)
			accounts, streams, types := make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
			positions, ids, at := make([]int64, 0, n), make([]uuid.UUID, 0, n), make([]time.Time, 0, n)
			for _, e := range batch {
				if e.AccountID == "" {
					continue
				}
				accounts, streams, types = append(accounts, e.AccountID), append(streams, e.StreamID), append(types, e.Type)
				positions, ids, at = append(positions, e.Position), append(ids, e.ID), append(at, e.RecordedAt)
			}
			if len(accounts) == 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, lockOwedSQL, accounts, streams, types, at); err != nil {
				return fmt.Errorf("fan out: %w", err)
			}
			tag, err := tx.Exec(ctx, fanOutSQL, accounts, streams, positions, ids, types, at)
			if err != nil {
				return fmt.Errorf("fan out: %w", err)
			}
			d.metrics.owed.Add(float64(tag.RowsAffected()))
			return nil
		},
		Committed: func([]eventstore.RecordedEvent) { d.Wake() },
	}
}
