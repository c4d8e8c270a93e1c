package receipts_test

import (
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore/storetest"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

// TestCallbackLinesNameTheRequest: every line a callback causes, deep in
// the settlement as well as the refusals, names the callback's request id
// (the one stored with its refusals) and its provider, which no caller
// passes down by hand.
func TestCallbackLinesNameTheRequest(t *testing.T) {
	var logs storetest.Logs
	e := newEnv(t, func(c *receipts.Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	id := e.newMessage(1, domain.StateSubmitted)
	e.mustPost(rcpt(id, "failed_temporary"))

	bad := rcpt(id, "delivered")
	bad.Attempt = 7
	raw := []byte(strings.Replace(string(body(rcpt(id, "delivered"), bad)), `"attempt":7`, `"attempt":2147483648`, 1))
	r := e.postRaw("sim-a", sign(secretA, e.clock.Now(), raw), raw)
	require.Equal(t, http.StatusOK, r.status, "problem: %v", r.problem)
	require.Equal(t, 1, r.summary.Refused)

	var requestID string
	require.NoError(t, e.db.Pool.QueryRow(e.ctx, `SELECT request_id FROM receipt_refusals`).Scan(&requestID))
	require.NotEmpty(t, requestID)
	seen := map[string]bool{}
	for _, l := range logs.Lines() {
		msg, _ := l["msg"].(string)
		if msg != "receipt refused" && !strings.HasPrefix(msg, "delivered receipt for an attempt already given up") {
			continue
		}
		seen[msg] = true
		require.Equal(t, requestID, l["request_id"], "%v", l)
		require.Equal(t, "sim-a", l["provider"], "%v", l)
	}
	require.Len(t, seen, 2, "both the refusal and the stale delivery were logged")
}
