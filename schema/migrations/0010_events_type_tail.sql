-- The tail, by event type. Consumers that want a few types (the order
-- tracker: final message events; the accounts projection: money events;
-- the scheduler) otherwise walk the whole tail and read every event's row
-- to test its type; with this index they read only their own events.
-- Measured under afterok bench: the tail queries were the largest share of
-- PostgreSQL's time, most of it on rows the consumer then discarded.
CREATE INDEX events_type_tail ON events (type, xid, global_position);
