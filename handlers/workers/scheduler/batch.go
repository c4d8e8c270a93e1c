package scheduler

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/eventstore"
)

// pgxBatch pipelines several statements in one round trip.
type pgxBatch struct{ b pgx.Batch }

func (p *pgxBatch) add(sql string, args ...any) { p.b.Queue(sql, args...) }

func (p *pgxBatch) send(ctx context.Context, tx *eventstore.Tx) error {
	if p.b.Len() == 0 {
		return nil
	}
	return tx.SendBatch(ctx, &p.b).Close()
}
