-- A message's view shows its body and an order's view the metadata its
-- client sent: both are in the first event of their stream, and the read
-- side answers from read models, so the read models carry them. Rows the
-- projector wrote before this migration are filled from those events here,
-- so no view shows an empty body until a rebuild.
ALTER TABLE read_messages ADD COLUMN body text NOT NULL DEFAULT '';
ALTER TABLE read_orders ADD COLUMN metadata jsonb;

UPDATE read_messages m SET body = e.data->>'body'
FROM events e
WHERE e.stream_id = 'message-' || m.message_id AND e.stream_version = 1 AND e.type = 'MessageAccepted'
  AND e.data ? 'body';

UPDATE read_orders o SET metadata = e.data->'client_metadata'
FROM events e
WHERE e.stream_id = 'order-' || o.order_id AND e.stream_version = 1 AND e.type = 'OrderAccepted'
  AND e.data ? 'client_metadata';
