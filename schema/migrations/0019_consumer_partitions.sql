-- Partitioned tail consumers. A consumer (the scheduler, the order
-- tracker, each projector) splits the tail into a fixed number of
-- partitions by a hash of a key of each event (the stream id unless the
-- consumer's state spans streams), and each partition has its own
-- checkpoint and its own lease: the process named in owner may apply the
-- partition's events until lease_until, and a batch's checkpoint is saved
-- only if its process still holds the lease (checked in the batch's own
-- transaction, so a process whose lease was taken can never commit).
--
-- The rows are created when a consumer first starts with partitions; a
-- consumer that had a single row in checkpoints starts every partition
-- from it, so an upgrade neither re-applies nor skips an event.
CREATE TABLE consumer_partitions (
    consumer    text        NOT NULL,
    partition   integer     NOT NULL CHECK (partition >= 0),
    partitions  integer     NOT NULL CHECK (partitions > partition),
    xid         xid8        NOT NULL,
    position    bigint      NOT NULL,
    owner       text,
    lease_until timestamptz,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, partition)
);

-- The processes that follow a consumer, each with a heartbeat: a process
-- takes its fair share of the partitions (partitions / live members) and
-- releases what it holds beyond it, so a new process gets work without
-- waiting for a death.
CREATE TABLE consumer_members (
    consumer   text        NOT NULL,
    owner      text        NOT NULL,
    seen_until timestamptz NOT NULL,
    PRIMARY KEY (consumer, owner)
);
