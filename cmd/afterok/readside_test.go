package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
)

func afterok(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestReadSideCommands runs replay, projections status and rebuild, and
// verify --projections against a real database.
func TestReadSideCommands(t *testing.T) {
	db := storetest.NewDB(t)
	t.Setenv("DATABASE_URL", db.URL)
	ctx := context.Background()
	store := eventstore.New(db.Pool)

	code, out, _ := afterok(t, "accounts", "create", "--name", "Acme", "--credit", "10", "--json")
	require.Equal(t, 0, code)
	var created struct {
		AccountID string `json:"account_id"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &created))
	acct := created.AccountID

	// An order of two messages as the acceptor writes it, and one step.
	now := time.Now()
	orderID, m1, m2 := ulid.Make().String(), ulid.Make().String(), ulid.Make().String()
	md := eventstore.Metadata{AccountID: acct, CorrelationID: orderID}
	price := domain.Money{AmountMicros: 75_000, Currency: "EUR"}
	evs, err := store.ReadStream(ctx, domain.AccountStream(acct), 1)
	require.NoError(t, err)
	var a domain.Account
	for _, e := range evs {
		ev, _ := e.Decode()
		require.NoError(t, a.Apply(ev))
	}
	reserved, err := a.Reserve(orderID, domain.Money{AmountMicros: 150_000, Currency: "EUR"}, 2, now)
	require.NoError(t, err)
	msg := func(id string, i int) eventstore.StreamAppend {
		return eventstore.StreamAppend{Stream: domain.MessageStream(id), Expected: eventstore.NoStream, Events: []eventstore.EventData{
			eventstore.MustEvent(domain.MessageAccepted{MessageID: id, OrderID: orderID, AccountID: acct, Index: i, To: "+4915112345678",
				Country: "DE", Body: "hi", Encoding: "gsm7", Segments: 1, Price: price, ExpiresAt: now.Add(time.Hour), At: now}, md)}}
	}
	_, err = store.AppendMulti(ctx, []eventstore.StreamAppend{
		{Stream: domain.OrderStream(orderID), Expected: eventstore.NoStream, Events: []eventstore.EventData{eventstore.MustEvent(
			domain.OrderAccepted{OrderID: orderID, AccountID: acct, MessageCount: 2, Price: reserved.Amount, ValiditySeconds: 3600,
				ExpiresAt: now.Add(time.Hour), At: now}, md)}},
		{Stream: domain.AccountStream(acct), Expected: eventstore.Exact(a.Version), Events: []eventstore.EventData{eventstore.MustEvent(reserved, md)}},
		msg(m1, 0), msg(m2, 1),
	})
	require.NoError(t, err)
	_, err = store.Append(ctx, domain.MessageStream(m1), eventstore.Exact(1),
		eventstore.MustEvent(domain.MessageQueued{Attempt: 1, JobID: "job-1", At: now.Add(120 * time.Millisecond)}, md))
	require.NoError(t, err)

	code, out, _ = afterok(t, "replay", "message", m1)
	require.Equal(t, 0, code)
	require.Contains(t, out, "MessageAccepted")
	require.Contains(t, out, "to=+4915112345678 segments=1")
	require.Contains(t, out, "MessageQueued")
	require.Contains(t, out, "attempt=1 job=job-1")
	code, out, _ = afterok(t, "replay", "order", orderID, "--json")
	require.Equal(t, 0, code)
	var timeline struct {
		Steps []struct{ Type, Stream string } `json:"steps"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &timeline))
	var types []string
	for _, s := range timeline.Steps {
		types = append(types, s.Type)
	}
	require.ElementsMatch(t, []string{"OrderAccepted", "BalanceReserved", "MessageAccepted", "MessageAccepted", "MessageQueued"}, types)
	code, _, errOut := afterok(t, "replay", "order", ulid.Make().String())
	require.Equal(t, 1, code)
	require.Contains(t, errOut, "no order")

	code, out, _ = afterok(t, "projections", "status", "--json")
	require.Equal(t, 0, code)
	var st []struct {
		Name         string `json:"name"`
		EventsBehind int    `json:"events_behind"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &st))
	require.Len(t, st, 2)
	require.Equal(t, "messages", st[0].Name)
	require.Equal(t, 4, st[0].EventsBehind, "OrderAccepted, two MessageAccepted, MessageQueued")

	for _, name := range []string{"messages", "accounts"} {
		code, out, errOut = afterok(t, "projections", "rebuild", name)
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "rebuilt "+name+" from position 0")
		require.Contains(t, errOut, name+": done")
	}
	code, out, _ = afterok(t, "projections", "status")
	require.Equal(t, 0, code)
	require.Regexp(t, `messages\s+\d+\s+\d+\s+0\s+0\.000`, out)

	code, out, _ = afterok(t, "verify", "--projections")
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "every row matches the events")
	_, err = db.Pool.Exec(ctx, `UPDATE read_messages SET attempt = 9 WHERE message_id = $1`, m1)
	require.NoError(t, err)
	code, out, _ = afterok(t, "verify", "--projections")
	require.Equal(t, 1, code)
	require.Contains(t, out, "FAIL messages read_messages "+m1+": Attempt: events say 1, row has 9")

	code, _, errOut = afterok(t, "projections", "rebuild", "nope")
	require.Equal(t, 2, code)
	require.True(t, strings.Contains(errOut, "unknown projection"), errOut)
}
