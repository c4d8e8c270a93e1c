package orders

// The group commit: one transaction for a batch of one account's orders,
// and what happens when it fails.

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// commit runs one group commit and answers every order in it. An order
// that loses an Idempotency-Key race is taken out and the rest retried.
//
// One order must never fail the others it happens to share a commit with:
// when the group's commit fails for a reason that is not the store's
// being away (a value only the database refuses, say), every order of the
// group is committed again on its own, so the culprit alone gets the error.
func (a *Acceptor) commit(account string, batch []*pending) {
	// The commit must not die with the request that happened to be first.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	batch, repeats := withoutRepeatedKeys(batch)
	defer func() {
		// After the firsts are answered, so their records are committed.
		for _, p := range repeats {
			p.again = true
			close(p.done)
		}
	}()
	rest, err := a.commitGroup(ctx, account, batch)
	if err != nil && len(rest) > 1 && !storeAway(err) {
		a.cfg.Logger.Warn("group commit failed; committing its orders one by one", "account_id", account,
			"orders", len(rest), "err", err)
		for _, p := range rest {
			p.err, p.body = nil, nil
			alone, err := a.commitGroup(ctx, account, []*pending{p})
			if err != nil && !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
				a.cfg.Logger.ErrorContext(p.logCtx, "order commit failed", "err", err)
			}
			for _, p := range alone {
				close(p.done)
			}
		}
		return
	}
	switch {
	case errors.Is(err, eventstore.ErrWrongExpectedVersion) && len(rest) == 1:
		// A re-drive that lost its race (redrive.go): expected, and the
		// caller reads the message again.
		a.cfg.Logger.InfoContext(rest[0].logCtx, "order lost an append race", "err", err)
	case err != nil && len(rest) == 1: // one request's: its line names it
		a.cfg.Logger.ErrorContext(rest[0].logCtx, "order commit failed", "err", err)
	case err != nil:
		a.cfg.Logger.Error("order commit failed", "account_id", account, "orders", len(rest), "err", err)
	}
	for _, p := range rest {
		close(p.done)
	}
}

// commitGroup commits batch as one transaction, retrying as the balance
// and key races require. Orders that lost a key race are answered here;
// the rest are returned to be answered by the caller, each with its err
// set when it was refused. err is the failure that refused them all.
func (a *Acceptor) commitGroup(ctx context.Context, account string, batch []*pending) ([]*pending, error) {
	lockFirst := false
	for len(batch) > 0 {
		lost, err := a.commitOnce(ctx, account, batch, lockFirst)
		if err == nil {
			return batch, nil
		}
		if errors.Is(err, errBalanceMoved) && !lockFirst {
			lockFirst = true // decide under the lock this time: the answer is final
			continue
		}
		if lost == nil {
			err = unstorable(err)
			for _, p := range batch {
				if p.err == nil {
					p.err = err
				}
			}
			return batch, err
		}
		rest := batch[:0]
		for _, p := range batch {
			if lost[p] {
				p.recheck = true
				close(p.done)
			} else {
				p.err, p.body = nil, nil
				rest = append(rest, p)
			}
		}
		batch = rest
	}
	return batch, nil
}

// ErrUnstorable is returned for an order whose data PostgreSQL refused to
// store (SQLSTATE class 22, data exception: a character or value jsonb
// cannot hold). Validation is meant to refuse such input first; this is
// the backstop that keeps a gap there from being a 500.
var ErrUnstorable = errors.New("the order holds a value that cannot be stored")

func unstorable(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && strings.HasPrefix(pe.Code, "22") {
		return fmt.Errorf("%w: %w", ErrUnstorable, err)
	}
	return err
}

// storeAway reports a failure that is the database's, not any order's: a
// lost connection, a timeout, a shutdown. Committing the orders one by one
// would only fail each of them again.
func storeAway(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return true
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		c := pe.Code[:2]
		return c == "08" || c == "57" || c == "53"
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.SafeToRetry(err)
}

var errKeyRace = errors.New("idempotency key race")

// maxKeyRounds bounds how often a request whose Idempotency-Key another
// request of the same commit held starts again.
const maxKeyRounds = 32

// withoutRepeatedKeys keeps the first order of each Idempotency-Key in
// batch and returns the later ones apart: one statement cannot store a key
// twice, and the later ones are replays of the first or conflicts with it,
// which only its committed record can tell.
func withoutRepeatedKeys(batch []*pending) (firsts, repeats []*pending) {
	seen := map[string]bool{}
	firsts = batch[:0:0]
	for _, p := range batch {
		k := p.req.IdempotencyKey
		if k != "" && seen[k] {
			repeats = append(repeats, p)
			continue
		}
		if k != "" {
			seen[k] = true
		}
		firsts = append(firsts, p)
	}
	return firsts, repeats
}

// lockLateFrom is the batch size (in messages) from which the account is
// locked after the orders are written rather than before.
const lockLateFrom = 500

// errBalanceMoved sends a batch round again: the account it was decided
// against changed before it was locked.
var errBalanceMoved = errors.New("balance moved before the account was locked")

const insertKeysSQL = `INSERT INTO idempotency_keys (account_id, key, request_hash, order_id, status, response, created_at, expires_at)
SELECT $1, k, h, o, 202, r, $2, $3 FROM unnest($4::text[], $5::bytea[], $6::text[], $7::bytea[]) AS u(k, h, o, r)
ON CONFLICT (account_id, key) DO UPDATE
   SET request_hash = excluded.request_hash, order_id = excluded.order_id, status = excluded.status,
       response = excluded.response, created_at = excluded.created_at, expires_at = excluded.expires_at
   WHERE idempotency_keys.expires_at <= $2
RETURNING key`

func (a *Acceptor) commitOnce(ctx context.Context, account string, batch []*pending, lockFirst bool) (map[*pending]bool, error) {
	var lost map[*pending]bool
	err := a.store.InTx(ctx, func(tx *eventstore.Tx) error {
		// Small batches lock the account first and decide under the lock.
		// Large ones (a bulk order's COPY takes a while) decide against an
		// unlocked read, write the orders, and take the lock only for the
		// reservation itself and the commit: the lock is what every order
		// of the account (and the tracker's settlements) queue on.
		messages := 0
		for _, p := range batch {
			messages += len(p.accepted.Messages)
		}
		lockLate := messages > lockLateFrom && !lockFirst
		var acct domain.Account
		var err error
		if lockLate {
			acct, err = accounts.Load(ctx, tx, account)
		} else {
			acct, err = accounts.LoadForUpdate(ctx, tx, account)
		}
		if err != nil {
			return err
		}
		now := a.now().UTC()
		version := acct.Version
		var appends []eventstore.StreamAppend
		var reserved []eventstore.EventData
		var ok []*pending
		for _, p := range batch {
			ev, err := acct.Reserve(p.accepted.OrderID, p.accepted.Price, len(p.accepted.Messages), now)
			if err != nil {
				p.err = err // this order alone is refused; nothing of it is written
				continue
			}
			if err := acct.Apply(ev); err != nil {
				return err
			}
			p.err = nil
			reserved = append(reserved, withID(eventstore.MustEvent(ev, p.md)))
			appends = append(appends, p.streams...)
			ok = append(ok, p)
		}
		if len(ok) == 0 {
			return nil
		}
		if lockLate {
			if _, err := tx.Append(ctx, appends...); err != nil {
				return err
			}
			locked, err := accounts.LoadForUpdate(ctx, tx, account)
			if err != nil {
				return err
			}
			// Settlements may have moved the account since the unlocked read
			// (they never lower the balance, but other writers could): the
			// reservations are made again from the locked position.
			version, reserved = locked.Version, reserved[:0]
			for _, p := range ok {
				ev, err := locked.Reserve(p.accepted.OrderID, p.accepted.Price, len(p.accepted.Messages), now)
				if err != nil {
					return errBalanceMoved
				}
				if err := locked.Apply(ev); err != nil {
					return err
				}
				reserved = append(reserved, withID(eventstore.MustEvent(ev, p.md)))
			}
			appends = nil
		}
		appends = append(appends, eventstore.StreamAppend{Stream: domain.AccountStream(account),
			Expected: eventstore.Exact(version), Events: reserved})
		if _, err := tx.Append(ctx, appends...); err != nil {
			return err
		}
		var keys, orderIDs []string
		var hashes, bodies [][]byte
		byKey := map[string]*pending{}
		for _, p := range ok {
			if p.req.IdempotencyKey == "" {
				continue
			}
			body, err := p.req.Render(p.accepted)
			if err != nil {
				return err
			}
			p.body = body
			keys, orderIDs = append(keys, p.req.IdempotencyKey), append(orderIDs, p.accepted.OrderID)
			hashes, bodies = append(hashes, p.req.RequestHash[:]), append(bodies, body)
			byKey[p.req.IdempotencyKey] = p
		}
		if len(keys) == 0 {
			return nil
		}
		rows, err := tx.Query(ctx, insertKeysSQL, account, now, now.Add(a.cfg.IdempotencyTTL), keys, hashes, orderIDs, bodies)
		if err != nil {
			return fmt.Errorf("idempotency keys: %w", err)
		}
		stored := map[string]bool{}
		for rows.Next() {
			var k string
			if err := rows.Scan(&k); err != nil {
				rows.Close()
				return err
			}
			stored[k] = true
		}
		if err := rows.Err(); err != nil {
			return fmt.Errorf("idempotency keys: %w", err)
		}
		for k, p := range byKey {
			if !stored[k] {
				if lost == nil {
					lost = map[*pending]bool{}
				}
				lost[p] = true
			}
		}
		if lost != nil {
			return errKeyRace // roll back: those orders' events must not stay
		}
		return nil
	})
	return lost, err
}
