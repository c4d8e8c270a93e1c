-- The scheduler's table: one row per message that is not final yet. It is
-- written from the event tail (MessageAccepted inserts, MessageRetried sets
-- the next attempt and when it is due, a final event deletes) and read by
-- two loops: the queuer (due rows → dispatch jobs → MessageQueued) and the
-- expirer (rows past their validity → MessageFailed{expired}). Per-message
-- state lives here, on disk, never in a process.
CREATE TABLE message_schedule (
    message_id  text        PRIMARY KEY,
    account_id  text        NOT NULL,
    -- the attempt to queue next
    attempt     integer     NOT NULL,
    -- when to queue it; NULL while a job for it is queued or in flight. A
    -- queuer that claimed the row leases it by moving due_at forward, so
    -- a crash between publishing and recording re-queues it (deduplicated).
    due_at      timestamptz,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX message_schedule_due ON message_schedule (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX message_schedule_expiry ON message_schedule (expires_at);
