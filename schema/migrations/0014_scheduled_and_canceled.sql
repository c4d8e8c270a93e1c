-- Scheduled send and cancel. A message accepted with a send_at waits in
-- public state "scheduled" (its message_schedule row is due at send_at,
-- served by message_schedule_due like any other due time); a message
-- canceled before a worker routed it is final in state "canceled" and
-- refunded by the tracker. The read models show both, the order's counts
-- carry them, and the tracker counts canceled messages towards an order's
-- completion.
ALTER TABLE order_progress ADD COLUMN canceled integer NOT NULL DEFAULT 0;

ALTER TABLE read_messages
    ADD COLUMN send_at     timestamptz,
    ADD COLUMN canceled_at timestamptz;

ALTER TABLE read_orders
    ADD COLUMN send_at         timestamptz,
    ADD COLUMN count_scheduled integer NOT NULL DEFAULT 0,
    ADD COLUMN count_canceled  integer NOT NULL DEFAULT 0;
