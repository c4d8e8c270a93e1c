package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/stretchr/testify/require"
)

// checkRevocationAcrossProcesses: a key issued through one process and
// used on the other (which has it cached from that use) is refused by the
// other process within a second of its revocation through the first, the
// contract's bound for every process.
func (c *clusterHarness) checkRevocationAcrossProcesses() {
	t := c.t
	t.Helper()
	issuer, other := c.procs[0], c.procs[1]
	call := func(p *process, method, path, key string, body any) (int, map[string]any) {
		t.Helper()
		var rd *bytes.Reader
		if body != nil {
			b, err := json.Marshal(body)
			require.NoError(t, err)
			rd = bytes.NewReader(b)
		} else {
			rd = bytes.NewReader(nil)
		}
		req, err := http.NewRequest(method, p.api+path, rd)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+key)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		res, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		return res.StatusCode, out
	}
	status, issued := call(issuer, "POST", "/v1/account/keys", c.key.APIKey, map[string]any{})
	require.Equal(t, 201, status, "%v", issued)
	key, id := issued["api_key"].(string), issued["key_id"].(string)
	require.NotEmpty(t, key)
	// The other process authenticates it, and so caches it.
	for range 3 {
		status, out := call(other, "GET", "/v1/account", key, nil)
		require.Equal(t, 200, status, "%v", out)
	}
	sent := time.Now()
	status, out := call(issuer, "DELETE", "/v1/account/keys/"+id, c.key.APIKey, nil)
	require.Equal(t, 204, status, "%v", out)
	// Every request the other process gets more than a second after the
	// revoke was sent is refused; the first refusal may come sooner.
	deadline := sent.Add(time.Second)
	var first time.Duration
	checked := 0
	for time.Now().Before(deadline.Add(500 * time.Millisecond)) {
		start := time.Now()
		status, _ := call(other, "GET", "/v1/account", key, nil)
		if status == 401 && first == 0 {
			first = start.Sub(sent)
		}
		if start.After(deadline) {
			checked++
			require.Equal(t, 401, status, "%s still took the key %s after its revoke was sent", other.name, start.Sub(sent))
		}
		time.Sleep(20 * time.Millisecond) // a client's pace, not a wait for the result
	}
	require.Positive(t, checked, "no request reached %s after the deadline (the machine is too slow to tell)", other.name)
	status, _ = call(issuer, "GET", "/v1/account", key, nil)
	require.Equal(t, 401, status, "the issuing process refuses it too")
	c.step(fmt.Sprintf("a key revoked through %s: %s refused it from %s after the revoke was sent", issuer.name, other.name, first.Round(time.Millisecond)))
}
