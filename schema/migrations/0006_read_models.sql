-- Read models: derived from the events, rebuildable from them at any time
-- (projections/). Every table here belongs to one projection, is written
-- only by it, in the same transaction as its checkpoint, and is replaced
-- wholesale by `afterok projections rebuild` (built aside, then swapped).
-- Ids and the columns that searches compare use the "C" collation: they
-- are ASCII, and byte order is both faster and the same everywhere.

-- One row per message: its current state as the API shows it, plus the
-- few fields that let the projector fold the next event without reading
-- the stream (lifecycle_state, current_attempt, next_attempt, not_before).
CREATE TABLE read_messages (
    message_id          text COLLATE "C" PRIMARY KEY,
    account_id          text COLLATE "C" NOT NULL,
    order_id            text COLLATE "C" NOT NULL,
    idx                 integer     NOT NULL,
    to_number           text COLLATE "C" NOT NULL,
    country             text        NOT NULL,
    sender              text        NOT NULL,
    encoding            text        NOT NULL,
    segments            integer     NOT NULL,
    price_micros        bigint      NOT NULL,
    currency            text        NOT NULL,
    -- The public state (accepted, queued, routed, submitted, delivered,
    -- failed) and the attempt to show: a waiting retry is queued with the
    -- next attempt's number.
    state               text COLLATE "C" NOT NULL,
    attempt             integer     NOT NULL,
    lifecycle_state     text        NOT NULL,
    current_attempt     integer     NOT NULL,
    next_attempt        integer     NOT NULL,
    not_before          timestamptz,
    route_id            text,
    provider            text,
    route_reason        text,
    provider_message_id text,
    failure             jsonb,
    accepted_at         timestamptz NOT NULL,
    queued_at           timestamptz,
    routed_at           timestamptz,
    submitted_at        timestamptz,
    delivered_at        timestamptz,
    failed_at           timestamptz,
    retried_at          timestamptz,
    expires_at          timestamptz NOT NULL,
    -- The message stream's version this row has folded.
    version             integer     NOT NULL
);

-- Support search (GET /v1/messages), newest first, keyset-paginated on
-- (accepted_at, message_id). Each filter has an index that leads with its
-- equality columns and ends with the sort key, so a page is one backward
-- range scan whatever the account's size; see docs/read-side.md for plans.
CREATE INDEX read_messages_account ON read_messages (account_id, accepted_at, message_id);
CREATE INDEX read_messages_to ON read_messages (account_id, to_number, accepted_at, message_id);
-- Delivered is the bulk of any account and a filter on it finds a page
-- at once in read_messages_account; the rare states (failed, anything in
-- flight) get an index of their own that stays small.
CREATE INDEX read_messages_state ON read_messages (account_id, state, accepted_at, message_id)
    WHERE state <> 'delivered';
-- An order's messages (GET /v1/orders/{id}/messages, and the search when
-- it names an order) in request order, keyset-paginated on idx.
CREATE INDEX read_messages_order ON read_messages (order_id, idx);
CREATE INDEX read_messages_order_state ON read_messages (order_id, state, idx)
    WHERE state <> 'delivered';

-- One row per order: the order stream folded, its messages counted by
-- public state (moved by the same transaction that moves the message),
-- and what the account's money events charged and refunded for it.
CREATE TABLE read_orders (
    order_id          text COLLATE "C" PRIMARY KEY,
    account_id        text COLLATE "C" NOT NULL DEFAULT '',
    message_count     integer     NOT NULL DEFAULT 0,
    price_micros      bigint      NOT NULL DEFAULT 0,
    currency          text        NOT NULL DEFAULT '',
    validity_seconds  integer     NOT NULL DEFAULT 0,
    expires_at        timestamptz,
    accepted_at       timestamptz,
    started_at        timestamptz,
    completed_at      timestamptz,
    count_accepted    integer     NOT NULL DEFAULT 0,
    count_queued      integer     NOT NULL DEFAULT 0,
    count_routed      integer     NOT NULL DEFAULT 0,
    count_submitted   integer     NOT NULL DEFAULT 0,
    count_delivered   integer     NOT NULL DEFAULT 0,
    count_failed      integer     NOT NULL DEFAULT 0,
    count_expired     integer     NOT NULL DEFAULT 0,
    charged_micros    bigint      NOT NULL DEFAULT 0,
    refunded_micros   bigint      NOT NULL DEFAULT 0,
    -- The order stream's version this row has folded.
    version           integer     NOT NULL DEFAULT 0
);

-- Per provider and hour: what routing support needs to judge a provider.
-- Latencies are kept as fixed-bucket histograms (bounds in
-- projections/stats.go) so percentiles can be read over any range of hours.
CREATE TABLE read_provider_stats (
    hour              timestamptz NOT NULL,
    provider          text COLLATE "C" NOT NULL,
    submitted         bigint      NOT NULL DEFAULT 0,
    delivered         bigint      NOT NULL DEFAULT 0,
    failed            bigint      NOT NULL DEFAULT 0,
    retried           bigint      NOT NULL DEFAULT 0,
    submit_ms_sum     bigint      NOT NULL DEFAULT 0,
    submit_ms_count   bigint      NOT NULL DEFAULT 0,
    submit_ms_buckets bigint[]    NOT NULL,
    deliver_ms_sum    bigint      NOT NULL DEFAULT 0,
    deliver_ms_count  bigint      NOT NULL DEFAULT 0,
    deliver_ms_buckets bigint[]   NOT NULL,
    PRIMARY KEY (hour, provider)
);

-- Failures by normalized code, permanent (MessageFailed) and transient
-- (MessageRetried) apart.
CREATE TABLE read_provider_failures (
    hour       timestamptz NOT NULL,
    provider   text COLLATE "C" NOT NULL,
    code       text COLLATE "C" NOT NULL,
    stage      text COLLATE "C" NOT NULL,
    permanent  boolean     NOT NULL,
    count      bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (hour, provider, code, stage, permanent)
);

-- One row per account, folded from its stream.
CREATE TABLE read_accounts (
    account_id        text COLLATE "C" PRIMARY KEY,
    name              text        NOT NULL,
    currency          text        NOT NULL,
    allowed_countries text[]      NOT NULL,
    balance_micros    bigint      NOT NULL,
    reserved_micros   bigint      NOT NULL,
    credited_micros   bigint      NOT NULL,
    spent_micros      bigint      NOT NULL,
    refunded_micros   bigint      NOT NULL,
    opened_at         timestamptz NOT NULL,
    version           integer     NOT NULL
);
