-- The event store: append-only, the source of truth.

-- One row per stream: its current version and the hash of its last event.
-- Appends lock the rows of the streams they touch (never a global row), and
-- update them conditionally, so two writers with the same expected version
-- cannot both succeed.
CREATE TABLE streams (
    stream_id  text    PRIMARY KEY,
    version    integer NOT NULL CHECK (version >= 0),
    last_hash  bytea   NOT NULL
);

CREATE TABLE events (
    -- Unique and increasing in allocation order, but transactions commit out
    -- of order: readers follow (xid, global_position), see eventstore/tail.go.
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    xid             xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id       text        NOT NULL,
    stream_version  integer     NOT NULL CHECK (stream_version >= 1),
    event_id        uuid        NOT NULL,
    type            text        NOT NULL,
    schema_version  integer     NOT NULL CHECK (schema_version >= 1),
    -- The tenant the event belongs to, so account-scoped reads never touch
    -- another account's rows ('' for events that belong to no account).
    account_id      text        NOT NULL DEFAULT '',
    data            jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    PRIMARY KEY (stream_id, stream_version),
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_global_position_key UNIQUE (global_position)
);

-- The gap-safe global tail, and the same per tenant.
CREATE INDEX events_tail ON events (xid, global_position);
CREATE INDEX events_account_tail ON events (account_id, xid, global_position);

-- Rows are never updated or deleted: the database refuses it, not only the code.
CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'events are immutable: % on events refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER events_immutable BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change();

-- Checkpoints of the consumers that follow the tail (relay, scheduler,
-- order tracker, projectors). A transactional consumer writes its
-- checkpoint in the same transaction as its effects.
CREATE TABLE checkpoints (
    name        text        PRIMARY KEY,
    xid         xid8        NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
