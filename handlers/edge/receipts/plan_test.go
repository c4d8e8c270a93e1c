package receipts

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
)

// TestQueriesUseTheirIndexes shows the plans of the intake's frequent
// queries over a table of receipts, a tenth of them parked. Sequential
// scans are disabled so that the small test table does not hide a
// missing index: the question is whether an index serves the query at
// all, which is what keeps it fast on a table of millions.
func TestQueriesUseTheirIndexes(t *testing.T) {
	t.Parallel()
	db := storetest.NewDB(t)
	ctx := context.Background()
	if _, err := db.Pool.Exec(ctx, `INSERT INTO receipts (provider, provider_message_id, message_id, attempt, part, parts,
    status, done_at, raw, received_at, disposition, resolved_at, checked_version)
SELECT 'sim-a', 'p' || i, 'm' || i, 1, 1, 1, 'delivered', now(), '{}', now(),
    CASE WHEN i % 10 = 0 THEN 'parked' ELSE 'applied' END, CASE WHEN i % 10 = 0 THEN NULL ELSE now() END, 4
FROM generate_series(1, 20000) AS i`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Pool.Exec(ctx, `ANALYZE receipts`); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		sql   string
		args  []any
		index string
	}{
		{"parked receipts of submitted messages (every ApplyParked)", parkedOfSQL, []any{[]string{"m1", "m2"}}, "receipts_parked_message"},
		{"a callback's message history", historySQL, []any{[]string{"m1", "m2"}}, "receipts_message"},
		{"the sweeper's candidates", sweepSQL, []any{domain.MessageStream(""), sweepBatch}, "receipts_parked_"},
		{"the oldest parked, for support", oldestParkedSQL, []any{10}, "receipts_parked_oldest"},
		{"the parked gauge", countParkedSQL, nil, "receipts_parked_"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := pgx.BeginFunc(ctx, db.Pool, func(tx pgx.Tx) error {
				if _, err := tx.Exec(ctx, `SET LOCAL enable_seqscan = off`); err != nil {
					return err
				}
				rows, err := tx.Query(ctx, "EXPLAIN "+c.sql, c.args...)
				if err != nil {
					return err
				}
				lines, err := pgx.CollectRows(rows, pgx.RowTo[string])
				if err != nil {
					return err
				}
				plan := strings.Join(lines, "\n")
				t.Logf("plan:\n%s", plan)
				if !strings.Contains(plan, c.index) {
					t.Errorf("plan does not use %s", c.index)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}
