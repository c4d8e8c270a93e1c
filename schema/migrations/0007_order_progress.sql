-- The order tracker's table: how far each order is from completion and
-- what it has settled. Written in the same transaction as the tracker's
-- checkpoint and the account events it appends, so a final message is
-- counted, charged or refunded exactly once.
CREATE TABLE order_progress (
    order_id        text        PRIMARY KEY,
    account_id      text        NOT NULL,
    message_count   integer     NOT NULL,
    delivered       integer     NOT NULL DEFAULT 0,
    failed          integer     NOT NULL DEFAULT 0,
    expired         integer     NOT NULL DEFAULT 0,
    charged_micros  bigint      NOT NULL DEFAULT 0,
    refunded_micros bigint      NOT NULL DEFAULT 0,
    currency        text        NOT NULL,
    completed_at    timestamptz
);
