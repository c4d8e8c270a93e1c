package eventstore_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
)

// TestStatementName: a statement's metric label is its declared name, else
// its verb and table; never its text, its comments or its parameters.
func TestStatementName(t *testing.T) {
	cases := map[string]string{
		"-- name: tail.read\nWITH h AS MATERIALIZED (SELECT 1) SELECT * FROM events":                             "tail.read",
		"SELECT key_id, account_id, scopes FROM api_keys\nWHERE key_hash = $1 AND revoked_at IS NULL":            "select:api_keys",
		"/* a comment that used to be the label */ SELECT 1 FROM streams":                                        "select:streams",
		"-- the batch of messages\nINSERT INTO read_messages AS m (message_id) SELECT * FROM unnest($1::text[])": "insert:read_messages",
		`UPDATE streams s SET version = u.version FROM unnest($1::text[]) AS u(stream_id)`:                       "update:streams",
		`DELETE FROM message_schedule WHERE message_id = ANY($1)`:                                                "delete:message_schedule",
		`SELECT e.* FROM unnest($1::text[]) AS s(id) JOIN events e ON e.stream_id = s.id`:                        "select:events",
		`SELECT count(*) FROM (SELECT 1 FROM events WHERE global_position > $1 LIMIT $2) behind`:                 "select:events",
		`SELECT pg_advisory_lock($1)`:      "select:pg_advisory_lock",
		`VACUUM (ANALYZE) "read_messages"`: "vacuum:read_messages",
		`SHOW autovacuum`:                  "show:autovacuum",
		"CREATE TABLE IF NOT EXISTS schema_migrations (version integer)":     "create",
		`SELECT 'FROM secrets' AS x FROM "checkpoints" WHERE name = 'it''s'`: "select:checkpoints",
		"-- name: copy:events": "copy:events",
		"":                     "empty",
	}
	for sql, want := range cases {
		require.Equal(t, want, eventstore.StatementName(sql), "%q", sql)
	}
}
