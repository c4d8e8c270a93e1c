-- Receipts the intake refused one by one (handlers/receipts): a missing or
-- mistyped field, an integer out of range, text that is not valid Unicode
-- or holds U+0000, an unknown status. The rest of their batch is applied;
-- these are kept as evidence for support and the provider, byte for byte
-- (bytea: the text may be what jsonb cannot hold). Rows are never changed.
CREATE TABLE receipt_refusals (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    text        NOT NULL,
    request_id  text        NOT NULL,
    -- The receipt's position in its callback body.
    item        integer     NOT NULL,
    field       text        NOT NULL,
    -- handlers/provider's Refused* codes.
    code        text        NOT NULL,
    problem     text        NOT NULL,
    raw         bytea       NOT NULL,
    received_at timestamptz NOT NULL
);

CREATE INDEX receipt_refusals_received ON receipt_refusals (received_at);
