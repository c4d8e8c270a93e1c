-- Delivery receipts, every one of them, as the provider sent it and with
-- what the intake made of it (handlers/receipts). The events a receipt
-- causes are in the event store; this table is the evidence and the
-- waiting room: a receipt that beats its submission is parked here until
-- the message's MessageSubmitted is recorded.
--
-- Unlike events, rows here change: a parked receipt is resolved later
-- (applied or ignored), and a part receipt that was counted is linked to
-- the event its attempt finally produced. Rows are never deleted by the
-- intake.
CREATE TABLE receipts (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider            text        NOT NULL,
    provider_message_id text        NOT NULL,
    message_id          text        NOT NULL,
    attempt             integer     NOT NULL CHECK (attempt >= 1),
    part                integer     NOT NULL,
    parts               integer     NOT NULL,
    -- The normalized status (handlers/provider.ReceiptStatus) and, for
    -- failed and retry, the normalized failure (domain.Failure).
    status              text        NOT NULL CHECK (status IN ('delivered', 'failed', 'retry')),
    failure             jsonb,
    done_at             timestamptz NOT NULL,
    -- The receipt's own JSON object as the provider sent it.
    raw                 jsonb       NOT NULL,
    received_at         timestamptz NOT NULL,
    disposition         text        NOT NULL CHECK (disposition IN ('applied', 'parked', 'ignored')),
    reason              text        CHECK (reason IN ('final_state', 'stale_attempt', 'unknown_message',
                                                      'duplicate', 'provider_mismatch')),
    -- When the receipt stopped waiting: its arrival unless it was parked.
    resolved_at         timestamptz,
    -- The event that resolved the attempt this receipt counted in (applied
    -- receipts only; NULL for a part that has not resolved its message yet).
    event_id            uuid,
    -- The message stream's version when this receipt was last decided: the
    -- sweeper re-examines a parked receipt only once its stream has moved.
    checked_version     integer     NOT NULL,
    CHECK (parts >= 1 AND part BETWEEN 1 AND parts),
    CHECK ((status = 'delivered') = (failure IS NULL)),
    CHECK ((disposition = 'ignored') = (reason IS NOT NULL)),
    CHECK ((disposition = 'parked') = (resolved_at IS NULL)),
    CHECK (event_id IS NULL OR disposition = 'applied')
);

-- A message's receipts, read (under the message stream's lock) to count
-- parts and recognise duplicates.
CREATE INDEX receipts_message ON receipts (message_id, attempt);

-- Parked receipts are few and short-lived; partial indexes keep the
-- look-ups that find them (by message after a submission, oldest first for
-- support and the sweeper, the gauge's count) independent of the table's size.
CREATE INDEX receipts_parked_message ON receipts (message_id) WHERE disposition = 'parked';
CREATE INDEX receipts_parked_oldest ON receipts (received_at, id) WHERE disposition = 'parked';
