-- What the scheduler's stranded-message check needs: when the job of the
-- row's queued attempt was published (queued_at; NULL while the row is due,
-- or once the check found the message past needing a job) and where it sits
-- in the dispatch stream (job_seq). A row queued long ago whose job is no
-- longer in the stream, for a message still queued or routed, is a message
-- nothing would move: the check queues its attempt again. The index keeps
-- the check off the rows that are due or settled.
ALTER TABLE message_schedule
    ADD COLUMN queued_at timestamptz,
    ADD COLUMN job_seq   bigint;
CREATE INDEX message_schedule_queued ON message_schedule (queued_at) WHERE queued_at IS NOT NULL;
