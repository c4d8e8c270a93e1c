package eventstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strconv"
	"time"
)

// Partitions and leases.
//
// A consumer splits the tail into a fixed number of partitions by a hash
// of a key of each event (PartitionOf). Each partition has its own
// checkpoint and is applied by one process at a time: the one holding its
// lease, a row in consumer_partitions with an owner and an expiry. A
// process renews its leases while it runs; when it dies, its leases expire
// and the other processes of the consumer take the partitions over, each
// from the partition's own checkpoint.
//
// Two owners never apply one partition's batch: a batch's checkpoint is
// saved, in the batch's own transaction, only where the row still names
// this process as owner with a lease that has not expired, and only from
// the checkpoint the batch was read after. The row lock taken by that
// update is held until commit, so a takeover (an update of the same row)
// either happens before it — and the batch finds itself no longer owner
// and rolls back — or waits for the commit and takes the partition over
// from the checkpoint the batch saved.

// DefaultPartitions is the number of partitions of a consumer when neither
// the consumer nor the store names one.
const DefaultPartitions = 8

// DefaultLease is how long a partition's lease lasts without renewal. An
// owner renews at a third of it; the others look for expired leases as
// often, so a dead owner's partitions move within about 1⅓ leases (8 s).
const DefaultLease = 6 * time.Second

// PartitionOf maps a partition key to one of n partitions (FNV-1a, 32
// bit): stable across processes, releases and restarts.
func PartitionOf(key string, n int) int {
	h := fnv.New32a()
	_, _ = h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// ByOrder is a partition key for consumers whose state is per order (an
// order's summary, its settlement): the event's correlation id, which is
// its order's id on the order's stream and on each of its messages' (and on
// the money events that settle it). A stream's events all carry one order,
// so a stream still lives in one partition.
func ByOrder(e RecordedEvent) string { return e.Metadata.CorrelationID }

// ByAccount is a partition key for consumers whose state is per account.
func ByAccount(e RecordedEvent) string { return e.AccountID }

func (c *Consumer) partitionOf(e RecordedEvent, n int) int {
	key := e.StreamID
	if c.PartitionKey != nil {
		if k := c.PartitionKey(e); k != "" {
			key = k
		}
	}
	return PartitionOf(key, n)
}

const (
	partitionsShapeSQL = `-- name: consumer.shape
SELECT count(*), coalesce(min(partitions), 0), coalesce(max(partitions), 0)
FROM consumer_partitions WHERE consumer = $1`

	// A consumer that ran before partitions has one row in checkpoints:
	// every partition starts from it (it is below every event any partition
	// has yet to apply).
	createPartitionsSQL = `-- name: consumer.create_partitions
INSERT INTO consumer_partitions (consumer, partition, partitions, xid, position)
SELECT $1, p, $2, coalesce(c.xid, '0'::xid8), coalesce(c.position, 0)
FROM generate_series(0, $2::int - 1) AS p LEFT JOIN checkpoints c ON c.name = $1
ON CONFLICT (consumer, partition) DO NOTHING`

	// The others count; this process is one more. (A data-modifying CTE's
	// row is not visible to the statement's own query.)
	heartbeatSQL = `-- name: consumer.heartbeat
WITH beat AS (
  INSERT INTO consumer_members (consumer, owner, seen_until) VALUES ($1, $2, clock_timestamp() + $3 * interval '1 second')
  ON CONFLICT (consumer, owner) DO UPDATE SET seen_until = excluded.seen_until),
forget AS (
  DELETE FROM consumer_members WHERE consumer = $1 AND seen_until < clock_timestamp() - interval '1 minute')
SELECT count(*) + 1 FROM consumer_members WHERE consumer = $1 AND owner <> $2 AND seen_until > clock_timestamp()`

	// renewSQL returns what this process still owns, with the checkpoints
	// as committed: the authority a process starts each round from.
	renewSQL = `-- name: consumer.renew
UPDATE consumer_partitions SET lease_until = clock_timestamp() + $3 * interval '1 second'
WHERE consumer = $1 AND owner = $2
RETURNING partition, xid, position`

	// acquireSQL takes free or expired partitions (SKIP LOCKED: a row
	// locked by a batch committing right now is left for the next round).
	acquireSQL = `-- name: consumer.acquire
WITH free AS (
  SELECT partition, owner FROM consumer_partitions
  WHERE consumer = $1 AND (owner IS NULL OR lease_until < clock_timestamp())
  ORDER BY partition LIMIT $4 FOR UPDATE SKIP LOCKED)
UPDATE consumer_partitions p SET owner = $2, lease_until = clock_timestamp() + $3 * interval '1 second'
FROM free WHERE p.consumer = $1 AND p.partition = free.partition
RETURNING p.partition, p.xid, p.position, coalesce(free.owner, '')`

	releaseSQL = `-- name: consumer.release
UPDATE consumer_partitions SET owner = NULL, lease_until = NULL
WHERE consumer = $1 AND owner = $2 AND partition = ANY($3::int[])`

	leaveSQL = `-- name: consumer.leave
WITH gone AS (DELETE FROM consumer_members WHERE consumer = $1 AND owner = $2)
UPDATE consumer_partitions SET owner = NULL, lease_until = NULL WHERE consumer = $1 AND owner = $2`

	// saveFencedSQL is the fence: it moves each partition's checkpoint
	// from where the batch read it to the batch's end, only while this
	// process holds a live lease on it (clock_timestamp: the time of the
	// statement, not of the transaction's start).
	saveFencedSQL = `-- name: consumer.save
UPDATE consumer_partitions p SET xid = $3::text::xid8, position = $4, updated_at = now()
FROM unnest($5::int[], $6::text[], $7::bigint[]) AS u(partition, from_xid, from_position)
WHERE p.consumer = $1 AND p.partition = u.partition
  AND p.owner = $2 AND p.lease_until > clock_timestamp()
  AND p.xid = u.from_xid::xid8 AND p.position = u.from_position`

	// saveUnownedSQL is Step's: every partition from one cursor, with no
	// lease (for a consumer driven by hand, with no Run of it live).
	saveUnownedSQL = `-- name: consumer.save_unowned
WITH moved AS (
  UPDATE consumer_partitions SET xid = $2::text::xid8, position = $3, updated_at = now()
  WHERE consumer = $1 AND xid = $4::text::xid8 AND position = $5 RETURNING 1)
SELECT (SELECT count(*) FROM consumer_partitions WHERE consumer = $1), (SELECT count(*) FROM moved)`
)

// ErrPartitionsChanged means the database holds a consumer's partitions in
// another number than the one configured. Changing the number needs every
// process of the consumer stopped: the first to start with the new number
// then brings the old partitions to one checkpoint and splits anew.
var ErrPartitionsChanged = errors.New("the number of partitions changed")

// partitionsOf returns how many partitions a consumer's rows hold,
// creating n of them (from its single checkpoint, if any) when it has none.
func (s *Store) partitionsOf(ctx context.Context, name string, n int) (int, error) {
	var rows, lo, hi int
	if err := s.pool.QueryRow(ctx, partitionsShapeSQL, name).Scan(&rows, &lo, &hi); err != nil {
		return 0, fmt.Errorf("partitions of %s: %w", name, err)
	}
	if rows == 0 {
		if _, err := s.pool.Exec(ctx, createPartitionsSQL, name, n); err != nil {
			return 0, fmt.Errorf("create partitions of %s: %w", name, err)
		}
		return s.partitionsOf(ctx, name, n)
	}
	if lo != hi || rows != lo {
		return 0, fmt.Errorf("consumer %s: %d partition rows for %d..%d partitions", name, rows, lo, hi)
	}
	return lo, nil
}

// ownerID names a process's claim on a consumer: host, pid and a random
// part, so that two Runs in one process (tests, a restart) are distinct.
func ownerID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return host + "/" + strconv.Itoa(os.Getpid()) + "/" + hex.EncodeToString(b[:])
}

func xidText(c Cursor) string { return strconv.FormatUint(c.XID, 10) }
