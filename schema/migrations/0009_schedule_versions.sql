-- What the queuer needs to record MessageQueued without reading the
-- message's history: the stream version at which the message became due
-- (MessageAccepted or MessageRetried), the event that made it due, and the
-- order it belongs to. MessageQueued is appended with exactly that
-- expected version, so a message that moved on meanwhile (expired, say)
-- is never queued. version 0 means "unknown": the queuer reads the stream.
ALTER TABLE message_schedule
    ADD COLUMN version   integer NOT NULL DEFAULT 0,
    ADD COLUMN last_type text    NOT NULL DEFAULT '',
    ADD COLUMN caused_by uuid,
    ADD COLUMN order_id  text    NOT NULL DEFAULT '',
    ADD COLUMN trace_id  text    NOT NULL DEFAULT '';
