package receipts

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/afterok/afterok/handlers/provider"
)

// Refusal is one receipt of a callback that could not be used, as the
// answer reports it: its position in the body, the field at fault, a
// stable code (provider.Refused*) and what is wrong. The rest of the
// callback is settled as usual; a refused receipt is recorded in
// receipt_refusals, counted and logged, and sending it again will not
// change its fate, so the provider should not retry it.
type Refusal struct {
	Index   int    `json:"index"`
	Field   string `json:"field,omitempty"`
	Code    string `json:"code"`
	Problem string `json:"problem"`
}

const insertRefusalsSQL = `INSERT INTO receipt_refusals (provider, request_id, item, field, code, problem, raw, received_at)
SELECT $1, $2, u.item, u.field, u.code, u.problem, u.raw, $3
FROM unnest($4::int[], $5::text[], $6::text[], $7::text[], $8::bytea[]) AS u(item, field, code, problem, raw)`

type execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// recordRefusals stores refused receipts, in the settlement's transaction
// when there is one, so a callback answered 503 keeps nothing of itself.
func recordRefusals(ctx context.Context, db execer, name, requestID string, refused []*provider.ReceiptError, now time.Time) error {
	if len(refused) == 0 {
		return nil
	}
	n := len(refused)
	items := make([]int32, n)
	fields, codes, problems := make([]string, n), make([]string, n), make([]string, n)
	raws := make([][]byte, n)
	for i, r := range refused {
		items[i], fields[i], codes[i], problems[i], raws[i] = int32(r.Index), storable(r.Field), r.Code, storable(r.Problem), r.Raw
	}
	if _, err := db.Exec(ctx, insertRefusalsSQL, name, requestID, now, items, fields, codes, problems, raws); err != nil {
		return fmt.Errorf("record refused receipts: %w", err)
	}
	return nil
}

// storable keeps a text column's value within what PostgreSQL accepts:
// problems quote the provider's input, which may be the very bytes that
// were refused.
func storable(s string) string {
	return strings.ToValidUTF8(strings.ReplaceAll(s, "\x00", `\u0000`), "\uFFFD")
}

// refusals reports the refused receipts: counted by provider and code
// (both bounded), one log line each, and the answer's list.
func (in *Intake) refusals(ctx context.Context, name string, refused []*provider.ReceiptError) []Refusal {
	if len(refused) == 0 {
		return nil
	}
	out := make([]Refusal, len(refused))
	for i, r := range refused {
		in.metrics.itemsRefused.WithLabelValues(name, r.Code).Inc()
		in.log.WarnContext(ctx, "receipt refused", "item", r.Index,
			"field", r.Field, "code", r.Code, "problem", r.Problem)
		out[i] = Refusal{Index: r.Index, Field: storable(r.Field), Code: r.Code, Problem: storable(r.Problem)}
	}
	return out
}
