package orders

// Re-drive: failed messages sent again as a new order. The new order goes
// through the Acceptor like any POST /v1/orders (planned and priced anew
// under the account's current policy, reserved in the group commit, 402
// when the balance is short); what a re-drive adds is, in that same
// transaction, a MessageRedriven on every original's stream at the
// version the re-drive read it. That append is the arbiter of races: two
// re-drives of one message both build an order, only one of the two
// transactions can move the original from that version, and the loser's
// transaction (its order, its messages, its reservation) rolls back
// whole. The loser then reads the message again and finds it re-driven.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// The errors of a re-drive, besides the Acceptor's (an
// *domain.InsufficientBalanceError, an *accept.ValidationError when the
// account may no longer send what failed, ErrShuttingDown).
var (
	// ErrRedriveNotFound: no such message or order, or one of another account.
	ErrRedriveNotFound = errors.New("not found")
	// ErrNotRedrivable: the message has not failed (or, for an order,
	// none of its messages is failed, not yet re-driven and of a
	// requested failure code).
	ErrNotRedrivable = errors.New("not redrivable")
	// ErrAlreadyRedriven: the message was re-driven before; it is
	// re-driven at most once.
	ErrAlreadyRedriven = errors.New("already redriven")
)

// RedriveRequest says who re-drives, why and what.
type RedriveRequest struct {
	Principal accounts.Principal
	// Account is the account's policy view (the destinations it may send
	// to, its currency), as accounts.Service.Policy returns it.
	Account domain.Account
	Reason  string // required
	// FailureCodes, when not empty, re-drives only messages whose failure
	// has one of these codes.
	FailureCodes []string
	// DryRun counts what would be re-driven and writes nothing.
	DryRun    bool
	RequestID string
}

// RedriveResult is what a re-drive did (or, dry, would do).
type RedriveResult struct {
	// Redrivable counts the messages that are (DryRun) or were re-driven.
	Redrivable int
	// Orders are the new orders, in order; each holds up to Batch of the
	// copies. Empty for a dry run.
	Orders []*Accepted
	// AlreadyRedriven and NotRedrivable count an order's messages left
	// out: re-driven before, or not failed (or of another failure code).
	AlreadyRedriven, NotRedrivable int
}

// Redriver re-drives failed messages.
type Redriver struct {
	store    *eventstore.Store
	acceptor *Acceptor
	policy   accept.Policy
	// Batch is how many copies one new order (one transaction) holds
	// (default 500): an order's re-drive of many messages becomes several
	// orders, each committed in a short transaction, so that it never
	// holds the account's lock for long nor starts again from the top
	// when one message moved under it.
	Batch int
}

// NewRedriver returns a Redriver that accepts its orders through acceptor
// under policy.
func NewRedriver(store *eventstore.Store, acceptor *Acceptor, policy accept.Policy) *Redriver {
	return &Redriver{store: store, acceptor: acceptor, policy: policy, Batch: 500}
}

// redriveConflicts bounds how often one batch is read again after losing
// its append: each loss follows another re-drive's commit of one of its
// messages, so the batch shrinks every round.
const redriveConflicts = 20

// Message re-drives one failed message as a one-message order.
func (r *Redriver) Message(ctx context.Context, req RedriveRequest, messageID string) (RedriveResult, error) {
	if err := domain.CheckReason(req.Reason, true); err != nil {
		return RedriveResult{}, err
	}
	stream := domain.MessageStream(messageID)
	for range redriveConflicts {
		recs, err := r.store.ReadStream(ctx, stream, 1)
		if err != nil {
			return RedriveResult{}, err
		}
		m, err := eventstore.LoadMessage(recs)
		if err != nil {
			return RedriveResult{}, err
		}
		if len(recs) == 0 || req.Principal.AccountID == "" || m.AccountID != req.Principal.AccountID {
			return RedriveResult{}, fmt.Errorf("message %s: %w", messageID, ErrRedriveNotFound)
		}
		if err := redrivable(&m, req.FailureCodes); err != nil {
			return RedriveResult{}, fmt.Errorf("message %s: %w", messageID, err)
		}
		if req.DryRun {
			return RedriveResult{Redrivable: 1}, nil
		}
		order, err := r.loadOrder(ctx, m.OrderID)
		if err != nil {
			return RedriveResult{}, err
		}
		part := []candidate{newCandidate(m, recs)}
		plan, err := r.plan(req, order, part)
		if err != nil {
			return RedriveResult{}, err
		}
		acc, err := r.accept(ctx, req, part, plan)
		if errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			continue // it moved meanwhile: another re-drive, most likely
		}
		if err != nil {
			return RedriveResult{}, err
		}
		return RedriveResult{Redrivable: 1, Orders: []*Accepted{acc}}, nil
	}
	return RedriveResult{}, fmt.Errorf("message %s kept changing while being re-driven: %w", messageID, eventstore.ErrWrongExpectedVersion)
}

// redrivable says why m may not be re-driven, or nil.
func redrivable(m *domain.Message, codes []string) error {
	switch {
	case m.Redriven != nil:
		return fmt.Errorf("%w as %s (order %s)", ErrAlreadyRedriven, m.Redriven.RedrivenAs, m.Redriven.OrderID)
	case !m.Redrivable():
		return fmt.Errorf("%w: it is %s; only a failed message can be re-driven", ErrNotRedrivable, m.State.PublicState())
	}
	if len(codes) > 0 && (m.Failure == nil || !slices.Contains(codes, m.Failure.Code)) {
		code := ""
		if m.Failure != nil {
			code = m.Failure.Code
		}
		return fmt.Errorf("%w: it failed with %s, not one of the failure_codes asked for", ErrNotRedrivable, code)
	}
	return nil
}

// redriveOrderMessagesSQL pages through an order's message streams, read from
// the store (as the cancel does): they are the MessageAccepted events of
// the order's own transaction, a range of events_type_tail.
const redriveOrderMessagesSQL = `-- name: redrive.order_messages
SELECT stream_id, global_position FROM events
WHERE type = 'MessageAccepted' AND xid = $1 AND global_position > $3 AND data->>'order_id' = $2
ORDER BY global_position LIMIT $4`

// Order re-drives every failed, not yet re-driven message of the order
// (of FailureCodes, when given), Batch copies per new order. It first
// reads them all and prices them, so an account that cannot pay for all
// of them is refused (402) before anything is written; the reservations
// themselves are still made order by order, so a balance that drops
// meanwhile can stop a re-drive part-way. Such a re-drive, or one cut
// off, can be repeated: what it re-drove already is left out.
func (r *Redriver) Order(ctx context.Context, req RedriveRequest, orderID string) (RedriveResult, error) {
	var res RedriveResult
	if err := domain.CheckReason(req.Reason, true); err != nil {
		return res, err
	}
	orderRecs, err := r.store.ReadStream(ctx, domain.OrderStream(orderID), 1)
	if err != nil {
		return res, err
	}
	order, err := foldOrder(orderRecs)
	if err != nil {
		return res, err
	}
	if order.ID == "" || req.Principal.AccountID == "" || order.AccountID != req.Principal.AccountID {
		return res, fmt.Errorf("order %s: %w", orderID, ErrRedriveNotFound)
	}
	batch := max(r.Batch, 1)
	var chosen []candidate
	after := int64(0)
	for seen := 0; seen < order.MessageCount; {
		streams, err := r.orderStreams(ctx, orderRecs[0].XID, orderID, after, batch)
		if err != nil {
			return res, err
		}
		if len(streams) == 0 {
			return res, fmt.Errorf("order %s: %d of its %d messages found in its transaction", orderID, seen, order.MessageCount)
		}
		seen += len(streams)
		after = streams[len(streams)-1].position
		ids := make([]string, len(streams))
		for i, s := range streams {
			ids[i] = s.stream
		}
		loaded, err := r.store.ReadStreams(ctx, ids)
		if err != nil {
			return res, err
		}
		for _, id := range ids {
			m, err := eventstore.LoadMessage(loaded[id])
			if err != nil {
				return res, err
			}
			switch err := redrivable(&m, req.FailureCodes); {
			case errors.Is(err, ErrAlreadyRedriven):
				res.AlreadyRedriven++
			case err != nil:
				res.NotRedrivable++
			default:
				chosen = append(chosen, newCandidate(m, loaded[id]))
			}
		}
	}
	res.Redrivable = len(chosen)
	if len(chosen) == 0 {
		return res, fmt.Errorf("order %s: %w: none of its %d messages is failed and not yet re-driven%s (%d re-driven before)",
			orderID, ErrNotRedrivable, order.MessageCount, codesNote(req.FailureCodes), res.AlreadyRedriven)
	}
	if req.DryRun {
		return res, nil
	}
	// Every batch is planned (and priced) before the first is written.
	var parts [][]candidate
	var plans []*accept.Plan
	total := domain.Zero(req.Account.Currency)
	for part := range slices.Chunk(chosen, batch) {
		plan, err := r.plan(req, order, part)
		if err != nil {
			return res, err
		}
		if total, err = total.Add(plan.Total); err != nil {
			return res, err
		}
		parts, plans = append(parts, part), append(plans, plan)
	}
	if err := r.checkAffordable(ctx, req, total, len(chosen)); err != nil {
		return res, err
	}
	res.Redrivable = 0
	for i, part := range parts {
		acc, n, err := r.acceptBatch(ctx, req, order, part, plans[i])
		if err != nil {
			return res, err
		}
		res.Redrivable += n
		res.AlreadyRedriven += len(part) - n
		if acc != nil {
			res.Orders = append(res.Orders, acc)
		}
	}
	return res, nil
}

func codesNote(codes []string) string {
	if len(codes) == 0 {
		return ""
	}
	return fmt.Sprintf(" with a failure code of %v", codes)
}

type orderStream struct {
	stream   string
	position int64
}

func (r *Redriver) orderStreams(ctx context.Context, xid uint64, orderID string, after int64, limit int) ([]orderStream, error) {
	rows, err := r.store.Pool().Query(ctx, redriveOrderMessagesSQL, xid, orderID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []orderStream
	for rows.Next() {
		var s orderStream
		if err := rows.Scan(&s.stream, &s.position); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// acceptBatch re-drives part as one new order, reading it again after a
// lost race: what another re-drive took meanwhile is left out. It returns
// the new order (nil when nothing was left) and how many it holds.
func (r *Redriver) acceptBatch(ctx context.Context, req RedriveRequest, order domain.Order, part []candidate, plan *accept.Plan) (*Accepted, int, error) {
	for range redriveConflicts {
		acc, err := r.accept(ctx, req, part, plan)
		if err == nil {
			return acc, len(part), nil
		}
		if !errors.Is(err, eventstore.ErrWrongExpectedVersion) {
			return nil, 0, err
		}
		ids := make([]string, len(part))
		for i, c := range part {
			ids[i] = domain.MessageStream(c.msg.ID)
		}
		loaded, err := r.store.ReadStreams(ctx, ids)
		if err != nil {
			return nil, 0, err
		}
		var still []candidate
		for _, id := range ids {
			m, err := eventstore.LoadMessage(loaded[id])
			if err != nil {
				return nil, 0, err
			}
			if redrivable(&m, req.FailureCodes) == nil {
				still = append(still, newCandidate(m, loaded[id]))
			}
		}
		if len(still) == 0 {
			return nil, 0, nil
		}
		part = still // and priced again: the plan is per message
		if plan, err = r.plan(req, order, part); err != nil {
			return nil, 0, err
		}
	}
	return nil, 0, fmt.Errorf("an order's failed messages kept changing while being re-driven: %w", eventstore.ErrWrongExpectedVersion)
}

// candidate is a failed message to re-drive, with the latest event of the
// history it was folded from: the MessageRedriven append expects its
// version and follows it up (causation, trace).
type candidate struct {
	msg  domain.Message
	last []eventstore.RecordedEvent
}

func newCandidate(m domain.Message, recs []eventstore.RecordedEvent) candidate {
	return candidate{msg: m, last: recs[len(recs)-1:]}
}

// plan prices the copies anew under the account's current policy, with
// the original order's validity and client metadata.
func (r *Redriver) plan(req RedriveRequest, order domain.Order, part []candidate) (*accept.Plan, error) {
	planner := accept.NewPlanner(r.policy, &req.Account)
	planner.Grow(len(part))
	for _, c := range part {
		// A problem is reported at the original's index in its order.
		if err := planner.Add(c.msg.Index, accept.Input{To: c.msg.To, Body: c.msg.Body, From: c.msg.From}); err != nil {
			return nil, err
		}
	}
	if order.ValiditySeconds > 0 {
		planner.SetValidity(int64(order.ValiditySeconds))
	}
	if len(order.ClientMetadata) > 0 {
		planner.SetMetadata(order.ClientMetadata)
	}
	return planner.Finish()
}

// checkAffordable refuses (402) a re-drive the balance cannot pay for as
// a whole, before its first order is written. The reservations decide in
// the end; this only keeps the common case from stopping part-way.
func (r *Redriver) checkAffordable(ctx context.Context, req RedriveRequest, total domain.Money, messages int) error {
	acct, err := accounts.Load(ctx, r.store.Pool(), req.Principal.AccountID)
	if err != nil {
		return err
	}
	_, err = acct.Reserve("redrive-check", total, messages, r.acceptor.now())
	return err
}

func (r *Redriver) accept(ctx context.Context, req RedriveRequest, part []candidate, plan *accept.Plan) (*Accepted, error) {
	src := &redriveOf{actor: req.Principal.KeyID, reason: req.Reason, sources: make([]redriveSource, len(part))}
	for i, c := range part {
		// The original's correlation (its own order) stays: consumers
		// partition an order's events by it (eventstore.ByOrder), and every
		// event of one stream must land in one partition.
		md := eventstore.FollowUp(c.last, req.Principal.KeyID)
		md.AccountID = req.Principal.AccountID
		if req.RequestID != "" {
			md.CausationID, md.TraceID = req.RequestID, req.RequestID
		}
		src.sources[i] = redriveSource{messageID: c.msg.ID, version: c.msg.Version, md: md}
	}
	res, err := r.acceptor.Accept(ctx, Request{Principal: req.Principal, Plan: plan, RequestID: req.RequestID, redrive: src})
	if err != nil {
		return nil, err
	}
	return res.Accepted, nil
}

func (r *Redriver) loadOrder(ctx context.Context, orderID string) (domain.Order, error) {
	recs, err := r.store.ReadStream(ctx, domain.OrderStream(orderID), 1)
	if err != nil {
		return domain.Order{}, err
	}
	return foldOrder(recs)
}

func foldOrder(recs []eventstore.RecordedEvent) (domain.Order, error) {
	var order domain.Order
	for _, rec := range recs {
		ev, err := rec.Decode()
		if err != nil {
			return order, err
		}
		if err := order.Apply(ev); err != nil {
			return order, err
		}
	}
	return order, nil
}

// redriveOf is what the Acceptor needs to make an order a re-drive: for
// each planned message the original it sends again, and who asked why.
type redriveOf struct {
	actor, reason string
	sources       []redriveSource
}

type redriveSource struct {
	messageID string
	version   int // the original's stream version the re-drive read
	md        eventstore.Metadata
}

// appends are the MessageRedriven events of the order acc, one on each
// original's stream at the version it was read at.
func (r *redriveOf) appends(acc *Accepted, now time.Time) []eventstore.StreamAppend {
	out := make([]eventstore.StreamAppend, len(r.sources))
	for i, s := range r.sources {
		ev := domain.MessageRedriven{RedrivenAs: acc.Messages[i].ID, OrderID: acc.OrderID, Actor: r.actor, Reason: r.reason, At: now}
		out[i] = eventstore.StreamAppend{Stream: domain.MessageStream(s.messageID), Expected: eventstore.Exact(s.version),
			Events: []eventstore.EventData{eventstore.MustEvent(ev, s.md)}}
	}
	return out
}
