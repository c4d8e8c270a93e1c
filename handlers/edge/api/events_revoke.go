package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

// An event stream authenticates once, when it opens, and may then run for
// days: without more, a revoked key would keep receiving its account's
// events. Two things end a stream whose key is revoked, whichever comes
// first:
//
//   - Its key's APIKeyRevoked event in the tail. The live tail (deliver)
//     and the catch-up read every event of the account, whatever the
//     stream's filter, so a stream ends at its key's revocation in tail
//     order: nothing after it reaches the stream, in any process, however
//     warm that process's key cache is.
//   - The live tail's sweep: every revocationSweep it asks the database,
//     in one query for every open stream of the process, which of their
//     keys no longer authenticate. This covers what the tail does not
//     show in time: a revocation made in the database alone, an admin key
//     streaming another account (its revocation is on its own account's
//     stream), a tail held back by a long transaction. One query per
//     process, not one per stream or key, so idle streams stay cheap.
//
// A stream still catching up from the store (before it joins the live
// tail) looks its key up through the key cache at every page instead.
// Either way the stream's last record is a `revoked` event (no id, so a
// client's Last-Event-ID stays on the last real event) and the server logs
// it; the client's reconnect is then refused with 401.

// revocationSweep is how often the live tail asks which of its streams'
// keys were revoked: well inside the contract's second.
const revocationSweep = 500 * time.Millisecond

// keyLookup is what the live tail asks about its streams' keys.
type keyLookup interface {
	// NotLive returns those of keyIDs that no longer authenticate.
	NotLive(ctx context.Context, keyIDs []string) ([]string, error)
}

// errKeyRevoked ends a stream whose key was revoked.
var errKeyRevoked = errors.New("the stream's API key was revoked")

// streamKey is what an open stream knows of the key that opened it.
type streamKey struct {
	id  string // the key id, as APIKeyRevoked names it
	raw string // the bearer key, to look it up again
}

// revokes reports whether e revokes the key with id keyID.
func revokes(e *eventstore.RecordedEvent, keyID string) bool {
	if e.Type != (domain.APIKeyRevoked{}).EventType() {
		return false
	}
	ev, err := e.Decode()
	if err != nil {
		return false
	}
	r, ok := ev.(domain.APIKeyRevoked)
	return ok && r.KeyID == keyID
}

// revokeLocked ends sub because its key was revoked, noticed how.
func (l *liveTail) revokeLocked(sub *subscriber, how string) {
	sub.revoked = how
	close(sub.ch)
	l.removeLocked(sub)
}

// sweepRevoked ends the streams whose keys no longer authenticate. A
// failed look-up (the database briefly away) leaves them to the next one.
func (l *liveTail) sweepRevoked(ctx context.Context, gen int) {
	if l.keys == nil {
		return
	}
	l.mu.Lock()
	seen := map[string]bool{}
	var keys []string
	for _, subs := range l.accounts {
		for sub := range subs {
			if !seen[sub.keyID] {
				seen[sub.keyID] = true
				keys = append(keys, sub.keyID)
			}
		}
	}
	l.mu.Unlock()
	if len(keys) == 0 {
		return
	}
	gone, err := l.keys.NotLive(ctx, keys)
	if err != nil {
		if ctx.Err() == nil {
			l.log.Warn("event streams: looking up the streams' keys failed, trying again", "err", err)
		}
		return
	}
	if len(gone) == 0 {
		return
	}
	revoked := map[string]bool{}
	for _, k := range gone {
		revoked[k] = true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if gen != l.gen || l.stop == nil {
		return
	}
	for _, subs := range l.accounts {
		for sub := range subs {
			if revoked[sub.keyID] {
				l.revokeLocked(sub, "key look-up")
			}
		}
	}
}

// stillValid looks the stream's key up again, through the key cache.
// Only a refusal ends the stream: a look-up that fails for another reason
// leaves it to the next check.
func (s *Server) stillValid(ctx context.Context, k streamKey) error {
	if _, err := s.deps.Accounts.Authenticate(ctx, k.raw); errors.Is(err, accounts.ErrUnauthenticated) {
		return errKeyRevoked
	}
	return nil
}

// endRevoked sends the stream's last record and logs why it ended.
func (s *Server) endRevoked(ctx context.Context, out *sseWriter, rc *RequestContext, f eventFilter, last eventstore.Cursor, how string) {
	fmt.Fprintf(&out.buf, "event: revoked\ndata: {\"code\":\"unauthenticated\",\"detail\":\"the API key of this stream was revoked\"}\n\n")
	_ = out.send()
	attrs := []any{"key_id", rc.Principal.KeyID, "last_position", last.Position, "noticed_by", how}
	if f.account != rc.Principal.AccountID {
		attrs = append(attrs, "stream_account", f.account)
	}
	s.log.InfoContext(ctx, "event stream ended: its API key was revoked", attrs...)
}
