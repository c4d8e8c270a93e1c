package api_test

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// findLine is the line whose msg is msg, failing the test when none is.
func findLine(t *testing.T, logs *storetest.Logs, msg string) map[string]any {
	t.Helper()
	l := logs.Find(msg)
	require.NotNil(t, l, "no log line %q in:\n%s", msg, logs.String())
	return l
}

// newLoggedEnv is newEnv with the API's and the acceptor's lines captured
// as JSON, through plain handlers: the roles themselves must see to it
// that their lines carry the context's ids.
func newLoggedEnv(t *testing.T) (*env, *storetest.Logs) {
	t.Helper()
	logs := &storetest.Logs{}
	log := slog.New(slog.NewJSONHandler(logs, nil))
	db := storetest.NewDB(t)
	store := eventstore.New(db.Pool)
	acc := accounts.New(store, time.Now)
	acceptor := orders.New(store, time.Now, orders.Config{Logger: log})
	t.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: acc, Acceptor: acceptor, Policy: accept.DefaultPolicy(),
		Registry: prometheus.NewRegistry(), Logger: log}, api.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, store: store, accounts: acc, srv: srv, api: s}, logs
}

// TestDeepLogLinesNameTheRequest: an order whose commit the database
// refuses is logged by the acceptor's lane goroutine, far from the HTTP
// handler; that line carries the request's id, its account and its order
// without any of them being passed down by hand.
func TestDeepLogLinesNameTheRequest(t *testing.T) {
	t.Parallel()
	e, logs := newLoggedEnv(t)
	c := e.account(10_000_000)
	// A refusal only the database makes, for this key alone.
	_, err := e.db.Pool.Exec(context.Background(),
		`ALTER TABLE idempotency_keys ADD CONSTRAINT refused_by_test CHECK (key <> 'refused-by-test')`)
	require.NoError(t, err)
	before := e.eventCount()

	r := e.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered),
		"Idempotency-Key", "refused-by-test", "X-Request-Id", "it-req-500")
	requireProblem(t, r, 500, "internal")
	require.Equal(t, "it-req-500", r.header.Get("X-Request-Id"))
	require.Equal(t, "it-req-500", r.body["request_id"])
	require.Equal(t, before, e.eventCount(), "nothing of the refused order is stored")

	deep := findLine(t, logs, "order commit failed")
	require.Equal(t, "it-req-500", deep["request_id"], "%v", deep)
	require.Equal(t, c.AccountID, deep["account_id"], "%v", deep)
	require.NotEmpty(t, deep["order_id"], "%v", deep)
	require.Contains(t, deep["err"], "refused_by_test")

	for _, msg := range []string{"request failed", "request"} {
		l := findLine(t, logs, msg)
		require.Equal(t, "it-req-500", l["request_id"], "%s: %v", msg, l)
		require.Equal(t, c.AccountID, l["account_id"], "%s: %v", msg, l)
	}
}

// TestRequestIDIsEchoedAndLogged: a sane X-Request-Id is kept, anything
// else is replaced by one of ours; either way the response and every log
// line of the request carry the same id.
func TestRequestIDIsEchoedAndLogged(t *testing.T) {
	t.Parallel()
	e, logs := newLoggedEnv(t)
	c := e.account(10_000_000)
	made := regexp.MustCompile(`^req_[0-9a-f]{24}$`)

	r := e.do("GET", "/v1/account", c.APIKey, nil, "X-Request-Id", "Ab.9_:-x")
	require.Equal(t, 200, r.status, "%s", r.raw)
	require.Equal(t, "Ab.9_:-x", r.header.Get("X-Request-Id"))

	for _, bad := range []string{"has space", strings.Repeat("x", 101), "a\u00e9"} {
		r = e.do("GET", "/v1/account", c.APIKey, nil, "X-Request-Id", bad)
		require.Equal(t, 200, r.status)
		require.Regexp(t, made, r.header.Get("X-Request-Id"), "%q is not honoured", bad)
	}
	r = e.do("GET", "/v1/account", "", nil) // no key: no account to name
	requireProblem(t, r, 401, "unauthenticated")
	unauth := r.header.Get("X-Request-Id")
	require.Regexp(t, made, unauth)
	require.Equal(t, unauth, r.body["request_id"])

	var ids []string
	for _, l := range logs.Lines() {
		if l["msg"] != "request" {
			continue
		}
		ids = append(ids, l["request_id"].(string))
		if l["request_id"] == unauth {
			require.NotContains(t, l, "account_id")
		} else {
			require.Equal(t, c.AccountID, l["account_id"], "%v", l)
		}
	}
	require.Len(t, ids, 5)
	require.Equal(t, "Ab.9_:-x", ids[0])
	require.Equal(t, unauth, ids[4])
}
