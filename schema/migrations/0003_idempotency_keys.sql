-- Idempotency-Key records: a repeat of a request with the same key and the
-- same body gets the original response back; the same key with another
-- body is a conflict. Only accepted orders are recorded (a rejected request
-- writes nothing), in the same transaction as the order's events.
CREATE TABLE idempotency_keys (
    account_id   text        NOT NULL,
    key          text        NOT NULL,
    request_hash bytea       NOT NULL,
    order_id     text        NOT NULL,
    status       integer     NOT NULL,
    -- The response as sent: a 100,000-message order answers ~12 MB of
    -- JSON, which lz4 shrinks cheaply.
    response     bytea       COMPRESSION lz4 NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (account_id, key)
);
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (expires_at);
