// Package orders accepts orders: the last, transactional step before 202.
// It reserves the order's price on the account and appends OrderAccepted,
// BalanceReserved and every MessageAccepted in one PostgreSQL transaction,
// together with the Idempotency-Key record, so a request is either wholly
// accepted and charged once, or not at all.
//
// Concurrent orders of one account are group-committed: the account's row
// lock is what keeps its balance from going below zero, and taking it once
// per batch instead of once per order is what lets one busy account send
// hundreds of single-message orders a second with low latency.
package orders

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/oklog/ulid/v2"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/logctx"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// ErrIdempotencyConflict is returned when an Idempotency-Key was used
// before with a different request body.
var ErrIdempotencyConflict = errors.New("idempotency key reused with a different request")

// ErrShuttingDown is returned for orders that arrive after Close.
var ErrShuttingDown = errors.New("shutting down")

// Config tunes the acceptor.
type Config struct {
	// IdempotencyTTL is how long a key is remembered (default 24 h).
	IdempotencyTTL time.Duration
	// BatchMessages caps the messages of one group commit (default 2,000);
	// a larger order is committed alone.
	BatchMessages int
	Logger        *slog.Logger
}

// Acceptor commits orders.
type Acceptor struct {
	store *eventstore.Store
	now   func() time.Time
	cfg   Config

	mu     sync.Mutex
	lanes  map[string]*lane
	closed bool
	wg     sync.WaitGroup
}

// New returns an Acceptor.
func New(store *eventstore.Store, now func() time.Time, cfg Config) *Acceptor {
	if cfg.IdempotencyTTL <= 0 {
		cfg.IdempotencyTTL = 24 * time.Hour
	}
	if cfg.BatchMessages <= 0 {
		cfg.BatchMessages = 2000
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	cfg.Logger = logctx.Wrap(cfg.Logger) // its lines name their request (logCtx)
	return &Acceptor{store: store, now: now, cfg: cfg, lanes: map[string]*lane{}}
}

// Request is a validated order to accept.
type Request struct {
	Principal accounts.Principal
	Plan      *accept.Plan
	// IdempotencyKey is optional; RequestHash is what a repeat of the key
	// is compared on (PlanHash).
	IdempotencyKey string
	RequestHash    [32]byte
	RequestID      string
	// Render produces the response body stored with the idempotency key;
	// it is only called for requests with a key.
	Render func(*Accepted) ([]byte, error)
	// redrive is set for a re-drive's order (redrive.go): the failed
	// messages its messages send again, one per planned message.
	redrive *redriveOf
}

// Accepted describes an accepted order.
type Accepted struct {
	OrderID    string
	AccountID  string
	Price      domain.Money
	Messages   []AcceptedMessage
	AcceptedAt time.Time
	ExpiresAt  time.Time
	SendAt     time.Time // zero: at once
}

// AcceptedMessage is one accepted message.
type AcceptedMessage struct {
	ID       string
	To       string
	Segments int
	Price    domain.Money
	// RedriveOf is the failed message a re-drive's copy sends again.
	RedriveOf string
}

// Result is Accept's answer: a fresh acceptance, or a replay of the
// response recorded for the same Idempotency-Key and body.
type Result struct {
	Accepted *Accepted
	// OrderID is the accepted order's id, the replayed one's too (its
	// Location).
	OrderID  string
	Replayed bool
	Status   int
	Body     []byte // set for replays and for fresh acceptances with a key
}

// Accept accepts the order or returns why not: an *domain.InsufficientBalanceError,
// ErrIdempotencyConflict, ErrShuttingDown, or a storage error.
func (a *Acceptor) Accept(ctx context.Context, req Request) (Result, error) {
	var p *pending
	for round := 1; ; round++ {
		if req.IdempotencyKey != "" {
			if res, found, err := a.lookup(ctx, req); err != nil || found {
				return res, err
			}
		}
		p = a.build(req)
		p.logCtx = logctx.With(context.WithoutCancel(ctx), "order_id", p.accepted.OrderID)
		if err := a.enqueue(p); err != nil {
			return Result{}, err
		}
		select {
		case <-p.done:
		case <-ctx.Done():
			// The order is already with its lane and will be committed or
			// not regardless; the client that left can learn which by
			// replaying its Idempotency-Key.
			return Result{}, ctx.Err()
		}
		// A request that shared its commit with another holding the same
		// key starts again once that one is decided: it then finds its
		// record, or (the other was refused) is decided on its own. Every
		// round decides at least one request of the key, so this ends.
		if !p.again {
			break
		}
		if round == maxKeyRounds {
			return Result{}, fmt.Errorf("idempotency key %q: still contended after %d rounds", req.IdempotencyKey, round)
		}
	}
	if p.recheck {
		res, found, err := a.lookup(ctx, req)
		if err == nil && !found {
			err = fmt.Errorf("idempotency key %q vanished while racing", req.IdempotencyKey)
		}
		return res, err
	}
	if p.err != nil {
		return Result{}, p.err
	}
	return Result{Accepted: p.accepted, OrderID: p.accepted.OrderID, Status: 202, Body: p.body}, nil
}

const lookupKeySQL = `SELECT request_hash, order_id, status, response FROM idempotency_keys
WHERE account_id = $1 AND key = $2 AND expires_at > $3`

func (a *Acceptor) lookup(ctx context.Context, req Request) (Result, bool, error) {
	var hash, body []byte
	var orderID string
	var status int
	err := a.store.Pool().QueryRow(ctx, lookupKeySQL, req.Principal.AccountID, req.IdempotencyKey, a.now()).Scan(&hash, &orderID, &status, &body)
	if errors.Is(err, pgx.ErrNoRows) {
		return Result{}, false, nil
	}
	if err != nil {
		return Result{}, false, fmt.Errorf("idempotency lookup: %w", err)
	}
	if string(hash) != string(req.RequestHash[:]) {
		return Result{}, true, ErrIdempotencyConflict
	}
	return Result{Replayed: true, OrderID: orderID, Status: status, Body: body}, true, nil
}

// pending is an order waiting for its lane's next commit.
type pending struct {
	req      Request
	accepted *Accepted
	streams  []eventstore.StreamAppend // order + messages
	md       eventstore.Metadata
	body     []byte
	err      error
	recheck  bool // lost an idempotency race: answer from the winner's record
	again    bool // its key was taken by another order of the same commit: start again
	done     chan struct{}
	// logCtx carries the request's log ids (logctx) and the order's, for
	// the lines the lane's goroutine logs about this order alone. It is
	// detached from the request's cancellation: it only carries values.
	logCtx context.Context
}

func (a *Acceptor) build(req Request) *pending {
	now := a.now().UTC()
	plan := req.Plan
	orderID := ulid.Make().String()
	acct := req.Principal.AccountID
	// The validity counts from when the messages may first go out: a
	// scheduled order's from its send_at.
	expires := plan.Start(now).Add(time.Duration(plan.ValiditySeconds) * time.Second)
	md := eventstore.Metadata{AccountID: acct, CorrelationID: orderID, CausationID: req.RequestID,
		Actor: req.Principal.KeyID, TraceID: req.RequestID}
	acc := &Accepted{OrderID: orderID, AccountID: acct, Price: plan.Total, AcceptedAt: now, ExpiresAt: expires,
		SendAt: plan.SendAt, Messages: make([]AcceptedMessage, len(plan.Messages))}
	streams := make([]eventstore.StreamAppend, 0, len(plan.Messages)+1)
	streams = append(streams, eventstore.StreamAppend{Stream: domain.OrderStream(orderID), Expected: eventstore.NoStream,
		Events: []eventstore.EventData{withID(eventstore.MustEvent(domain.OrderAccepted{
			OrderID: orderID, AccountID: acct, MessageCount: len(plan.Messages), Price: plan.Total,
			ValiditySeconds: plan.ValiditySeconds, ExpiresAt: expires, SendAt: plan.SendAt, ClientMetadata: plan.ClientMetadata,
			IdempotencyKey: req.IdempotencyKey, At: now}, md))}})
	for i, m := range plan.Messages {
		id := ulid.Make().String()
		var redriveOf string
		if req.redrive != nil {
			redriveOf = req.redrive.sources[i].messageID
		}
		acc.Messages[i] = AcceptedMessage{ID: id, To: m.To, Segments: m.Segments, Price: m.Price, RedriveOf: redriveOf}
		streams = append(streams, eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.NoStream,
			Events: []eventstore.EventData{eventstore.MustEvent(domain.MessageAccepted{
				MessageID: id, OrderID: orderID, AccountID: acct, Index: i, To: m.To, Country: m.Region, From: m.From,
				Body: m.Body, Encoding: string(m.Encoding), Segments: m.Segments, Price: m.Price, ExpiresAt: expires, SendAt: plan.SendAt,
				RedriveOf: redriveOf, At: now}, md)}})
	}
	if req.redrive != nil {
		// In the order's own transaction, at the versions the re-drive
		// read: a message that moved meanwhile (another re-drive took it)
		// fails the whole order, which then leaves nothing behind.
		streams = append(streams, req.redrive.appends(acc, now)...)
	}
	return &pending{req: req, accepted: acc, streams: streams, md: md, done: make(chan struct{})}
}

func withID(e eventstore.EventData) eventstore.EventData {
	if e.ID == uuid.Nil {
		e.ID = uuid.Must(uuid.NewV7())
	}
	return e
}

// lane serialises one account's commits and batches what queues meanwhile.
type lane struct {
	account string
	queue   []*pending
}

func (a *Acceptor) enqueue(p *pending) error {
	acct := p.req.Principal.AccountID
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return ErrShuttingDown
	}
	l, running := a.lanes[acct]
	if !running {
		l = &lane{account: acct}
		a.lanes[acct] = l
	}
	l.queue = append(l.queue, p)
	if !running {
		a.wg.Add(1)
		go a.drain(l)
	}
	return nil
}

// drain commits the lane's queue batch by batch until it is empty, then
// retires the lane. Its goroutine is owned by the Acceptor (Close waits).
func (a *Acceptor) drain(l *lane) {
	defer a.wg.Done()
	for {
		a.mu.Lock()
		if len(l.queue) == 0 {
			delete(a.lanes, l.account)
			a.mu.Unlock()
			return
		}
		n, msgs := 0, 0
		for n < len(l.queue) && (n == 0 || msgs+len(l.queue[n].accepted.Messages) <= a.cfg.BatchMessages) {
			msgs += len(l.queue[n].accepted.Messages)
			n++
		}
		batch := l.queue[:n:n]
		l.queue = l.queue[n:]
		a.mu.Unlock()
		a.commit(l.account, batch)
	}
}

// Close stops taking orders and waits for the lanes to commit what they
// hold.
func (a *Acceptor) Close() {
	a.mu.Lock()
	a.closed = true
	a.mu.Unlock()
	a.wg.Wait()
}

// RunJanitor deletes expired idempotency keys every interval until ctx ends.
func (a *Acceptor) RunJanitor(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			tag, err := a.store.Pool().Exec(ctx, `DELETE FROM idempotency_keys WHERE ctid IN
  (SELECT ctid FROM idempotency_keys WHERE expires_at <= $1 LIMIT 10000)`, a.now())
			if err != nil && ctx.Err() == nil {
				a.cfg.Logger.Warn("idempotency janitor", "err", err)
			} else if tag.RowsAffected() > 0 {
				a.cfg.Logger.Debug("idempotency keys expired", "deleted", tag.RowsAffected())
			}
		}
	}
}
