package accounts

// Credits, and the Idempotency-Key that keeps a retried credit from
// moving money twice.

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
)

// ErrIdempotencyConflict is returned when a credit's Idempotency-Key was
// used before, within its scope and lifetime, for another credit (another
// account, amount or reason).
var ErrIdempotencyConflict = errors.New("idempotency key reused with a different credit")

// OperatorKeyScope is the scope of the command line's Idempotency-Keys:
// the operator has no account of its own. No account has this id
// (account ids are ULIDs).
const OperatorKeyScope = "operator"

// IdempotencyTTL sets how long a credit's Idempotency-Key is remembered
// (default 24 h, as orders' keys).
func IdempotencyTTL(d time.Duration) Option {
	return func(s *Service) {
		if d > 0 {
			s.creditKeyTTL = d
		}
	}
}

const defaultIdempotencyTTL = 24 * time.Hour

// maxIdempotencyKey and the visible-ASCII rule are those of the API's
// Idempotency-Key header (handlers/edge/api, idempotencyKey): the API
// checks the header first; this check is for callers that are not HTTP.
const maxIdempotencyKey = 255

// creditKeyPrefix marks a credit's record in idempotency_keys, the table
// orders' keys are recorded in. It ends in a space, which no key can hold
// (visible ASCII only), so no order's key is ever read as a credit's, nor
// the other way round, whatever the client picks.
const creditKeyPrefix = "credit "

// creditStatus is the status the API answers a fresh credit with, recorded
// with the answer so that a replay answers the same.
const creditStatus = 201

// CreditRequest is one credit.
type CreditRequest struct {
	AccountID    string // the account credited
	AmountMicros int64  // in the account's currency
	Action       Action // who and why; the reason is required
	// IdempotencyKey is optional. A repeat of the key with the same
	// account, amount and reason answers the first credit's answer and
	// writes nothing; with anything else it is ErrIdempotencyConflict.
	IdempotencyKey string
	// KeyScope is whose keys IdempotencyKey is one of: the calling key's
	// account (for an admin, its own account, not the one credited), or
	// OperatorKeyScope. Required with a key.
	KeyScope string
}

// Credited is a credit's answer: the account's balances right after it.
// With a key, it is what is recorded and replayed.
type Credited struct {
	AccountID string       `json:"account_id"`
	Credited  domain.Money `json:"credited"`
	Reason    string       `json:"reason"`
	Balance   domain.Money `json:"balance"`
	Reserved  domain.Money `json:"reserved"`
}

// CreditResult is CreditOnce's answer.
type CreditResult struct {
	Credited Credited
	// Replayed says the answer is the recorded one of an earlier request
	// with the same key: nothing was written this time.
	Replayed bool
	// Status and Body are the recorded answer (the JSON of Credited) when
	// a key was given, fresh or replayed; a replay's Credited is decoded
	// from Body. Without a key Body is nil.
	Status int
	Body   []byte
}

// Credit tops the account up by amountMicros of its currency: a
// BalanceCredited event with the action's reason (required) and actor,
// under the account's lock. It returns the account after the credit. It is
// CreditOnce without an Idempotency-Key.
func (s *Service) Credit(ctx context.Context, accountID string, amountMicros int64, act Action) (domain.Account, error) {
	var after domain.Account
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		var err error
		after, err = credit(ctx, tx, accountID, amountMicros, act, s.now())
		return err
	})
	if err != nil {
		return domain.Account{}, fmt.Errorf("credit %s: %w", accountID, err)
	}
	return after, nil
}

// CreditOnce credits as Credit does and, given an Idempotency-Key, at
// most once per key: the key's record is written in the transaction of
// the BalanceCredited event, so there is either both or neither.
//
// Two requests racing with one key (for one account or two) both miss the
// record at first and both try; the table's primary key decides. The
// loser's insert waits for the winner's commit and then fails with a
// unique violation, which rolls its credit back; it reads the winner's
// record and answers from it as a repeat, or as a conflict.
func (s *Service) CreditOnce(ctx context.Context, req CreditRequest) (CreditResult, error) {
	if req.IdempotencyKey == "" {
		after, err := s.Credit(ctx, req.AccountID, req.AmountMicros, req.Action)
		if err != nil {
			return CreditResult{}, err
		}
		return CreditResult{Credited: creditedOf(req, after), Status: creditStatus}, nil
	}
	if err := checkIdempotencyKey(req.IdempotencyKey); err != nil {
		return CreditResult{}, err
	}
	if req.KeyScope == "" {
		return CreditResult{}, errors.New("credit: an Idempotency-Key needs a KeyScope")
	}
	sum := creditHash(req)
	// Two rounds: a lost race is answered from the winner's record, which
	// is committed by the time the loser learns it lost. A second loss
	// would mean the record vanished in between (expired and deleted).
	for round := 0; round < 2; round++ {
		if res, found, err := s.lookupCredit(ctx, req, sum); err != nil || found {
			return res, err
		}
		res, err := s.creditWithKey(ctx, req, sum)
		if !lostKeyRace(err) {
			return res, err
		}
	}
	return CreditResult{}, fmt.Errorf("credit %s: idempotency key %q: still contended", req.AccountID, req.IdempotencyKey)
}

// credit appends one BalanceCredited under the account's row lock.
func credit(ctx context.Context, tx *eventstore.Tx, accountID string, amountMicros int64, act Action, now time.Time) (domain.Account, error) {
	a, err := LoadForUpdate(ctx, tx, accountID)
	if err != nil {
		return domain.Account{}, err
	}
	ev, err := a.TopUp(domain.Money{AmountMicros: amountMicros, Currency: a.Currency}, act.Reason, now)
	if err != nil {
		return domain.Account{}, err
	}
	if _, err := tx.Append(ctx, eventstore.StreamAppend{Stream: domain.AccountStream(accountID), Expected: eventstore.Exact(a.Version),
		Events: []eventstore.EventData{eventstore.MustEvent(ev, act.metadata(accountID))}}); err != nil {
		return domain.Account{}, err
	}
	if err := a.Apply(ev); err != nil {
		return domain.Account{}, err
	}
	return a, nil
}

// An expired record is taken out of the way first (the janitor of orders'
// keys deletes it eventually): two requests doing so at once both go on
// to the insert, and the primary key decides between them.
const (
	deleteExpiredCreditKeySQL = `DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND expires_at <= $3`
	insertCreditKeySQL        = `INSERT INTO idempotency_keys (account_id, key, request_hash, order_id, status, response, created_at, expires_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	lookupCreditKeySQL = `SELECT request_hash, status, response FROM idempotency_keys
WHERE account_id = $1 AND key = $2 AND expires_at > $3`
)

func (s *Service) creditWithKey(ctx context.Context, req CreditRequest, sum [32]byte) (CreditResult, error) {
	var res CreditResult
	err := s.store.InTx(ctx, func(tx *eventstore.Tx) error {
		now := s.now().UTC()
		after, err := credit(ctx, tx, req.AccountID, req.AmountMicros, req.Action, now)
		if err != nil {
			return err
		}
		c := creditedOf(req, after)
		body, err := json.Marshal(c)
		if err != nil {
			return err
		}
		body = append(body, '\n') // as the API's other answers end
		key := creditKeyPrefix + req.IdempotencyKey
		if _, err := tx.Exec(ctx, deleteExpiredCreditKeySQL, req.KeyScope, key, now); err != nil {
			return fmt.Errorf("idempotency key: %w", err)
		}
		// order_id holds the credited account: what the record is about.
		if _, err := tx.Exec(ctx, insertCreditKeySQL, req.KeyScope, key, sum[:], req.AccountID, creditStatus, body,
			now, now.Add(s.creditKeyTTL)); err != nil {
			return fmt.Errorf("idempotency key: %w", err)
		}
		res = CreditResult{Credited: c, Status: creditStatus, Body: body}
		return nil
	})
	if err != nil {
		return CreditResult{}, fmt.Errorf("credit %s: %w", req.AccountID, err)
	}
	return res, nil
}

func (s *Service) lookupCredit(ctx context.Context, req CreditRequest, sum [32]byte) (CreditResult, bool, error) {
	var stored, body []byte
	var status int
	err := s.store.Pool().QueryRow(ctx, lookupCreditKeySQL, req.KeyScope, creditKeyPrefix+req.IdempotencyKey, s.now()).
		Scan(&stored, &status, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return CreditResult{}, false, nil
	}
	if err != nil {
		return CreditResult{}, false, fmt.Errorf("idempotency lookup: %w", err)
	}
	if string(stored) != string(sum[:]) {
		return CreditResult{}, true, ErrIdempotencyConflict
	}
	res := CreditResult{Replayed: true, Status: status, Body: body}
	if err := json.Unmarshal(body, &res.Credited); err != nil {
		return CreditResult{}, true, fmt.Errorf("idempotency record of %q: %w", req.IdempotencyKey, err)
	}
	return res, true, nil
}

// lostKeyRace reports the unique violation of a key another request
// recorded first.
func lostKeyRace(err error) bool {
	var pe *pgconn.PgError
	return errors.As(err, &pe) && pe.Code == "23505" && pe.ConstraintName == "idempotency_keys_pkey"
}

func creditedOf(req CreditRequest, after domain.Account) Credited {
	m := func(micros int64) domain.Money { return domain.Money{AmountMicros: micros, Currency: after.Currency} }
	return Credited{AccountID: req.AccountID, Credited: m(req.AmountMicros), Reason: req.Action.Reason,
		Balance: m(after.Balance), Reserved: m(after.Reserved)}
}

func checkIdempotencyKey(key string) error {
	if len(key) > maxIdempotencyKey || strings.ContainsFunc(key, func(c rune) bool { return c < 0x21 || c > 0x7e }) {
		return fmt.Errorf("%w: an Idempotency-Key must be 1 to %d visible ASCII characters", ErrInvalid, maxIdempotencyKey)
	}
	return nil
}

// creditHash is what a credit's key is compared on: the account credited,
// the amount and the reason, each length-prefixed so that no two credits
// share a byte sequence. The actor is not part of it: any key of the
// scope may retry another's request.
func creditHash(req CreditRequest) [32]byte {
	h := sha256.New()
	h.Write([]byte("afterok-credit-v1"))
	writeField(h, req.AccountID)
	writeInt(h, req.AmountMicros)
	writeField(h, req.Action.Reason)
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

func writeInt(h hash.Hash, n int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(n))
	h.Write(b[:])
}

func writeField(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}
