-- Status callbacks (webhooks; the README's "Status callbacks" section).
--
-- webhook_endpoints is an endpoint's current state, written in the same
-- transaction as the event on its stream (webhook-<id>) that changed it.
-- failing_since is when the endpoint's current run of failed attempts
-- began (NULL after a success): the long-failure rule disables it.
CREATE TABLE webhook_endpoints (
    webhook_id      text PRIMARY KEY,
    account_id      text NOT NULL,
    url             text NOT NULL,
    event_types     text[] NOT NULL,
    description     text NOT NULL DEFAULT '',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    failing_since   timestamptz,
    deleted_at      timestamptz
);
-- The fan-out joins each event to its account's endpoints; the list
-- pages an account's endpoints by (created_at, webhook_id).
CREATE INDEX webhook_endpoints_account ON webhook_endpoints (account_id, created_at, webhook_id) WHERE deleted_at IS NULL;

-- Signing secrets: never in an event. Rotation gives the previous secret an
-- expires_at; until then both sign.
CREATE TABLE webhook_secrets (
    webhook_id text NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    expires_at timestamptz,
    PRIMARY KEY (webhook_id, created_at)
);

-- Deliveries still owed: a row per (endpoint, event) until it succeeds or
-- is exhausted (then the attempt log is the record and the row goes). The
-- primary key orders one endpoint's deliveries of one stream by the
-- event's global position (= stream version order), and only the first
-- of each (webhook, stream) is ready: the sender claims ready rows only,
-- so a stream's events go out in order without the claim looking past
-- the later, waiting ones. When a delivery goes, the next of its
-- (webhook, stream) is made ready in the same transaction. A claimed
-- delivery has next_attempt_at moved one lease ahead, so a crash
-- mid-send makes it due again, with the same attempt number.
CREATE TABLE webhook_deliveries (
    webhook_id      text NOT NULL,
    stream_id       text NOT NULL,
    position        bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    attempt         int NOT NULL DEFAULT 0,
    ready           boolean NOT NULL DEFAULT false,
    next_attempt_at timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, stream_id, position)
);
-- The claim walks the ready rows per endpoint: a skip scan finds the
-- endpoints with any, and each one's due rows come in next_attempt_at
-- order from the same index.
CREATE INDEX webhook_deliveries_ready ON webhook_deliveries (webhook_id, next_attempt_at) WHERE ready;

-- The attempt log, every attempt of every delivery, kept
-- AFTEROK_WEBHOOK_ATTEMPTS_KEEP (a janitor removes the oldest, walking
-- seq: no index on at, one index less on the busiest insert). Listed per
-- endpoint newest first; seq is the cursor.
CREATE TABLE webhook_attempts (
    seq              bigserial PRIMARY KEY,
    webhook_id       text NOT NULL,
    event_id         uuid NOT NULL,
    event_type       text NOT NULL,
    stream_id        text NOT NULL,
    attempt          int NOT NULL,
    status_code      int,
    error            text,
    duration_ms      int NOT NULL,
    response_excerpt text,
    at               timestamptz NOT NULL,
    next_attempt_at  timestamptz,
    outcome          text NOT NULL
);
CREATE INDEX webhook_attempts_list ON webhook_attempts (webhook_id, seq);
CREATE INDEX webhook_attempts_event ON webhook_attempts (webhook_id, event_id, seq);
