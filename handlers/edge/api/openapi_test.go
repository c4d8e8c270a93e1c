package api_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/console"
	"github.com/afterok/afterok/handlers/edge/receipts"
)

// TestOpenAPIMatchesTheRoutes fails when a mounted route is missing from
// openapi.json or the document lists an operation nothing serves. The
// server is built as afterok builds it, with the receipt intake and the
// console mounted.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	raw, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	var doc struct {
		OpenAPI string                    `json:"openapi"`
		Paths   map[string]map[string]any `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(raw, &doc))
	require.Equal(t, "3.1.0", doc.OpenAPI)
	intake, err := receipts.New(receipts.Config{Store: eventstore.New(nil), Providers: map[string][]byte{"sim-a": []byte("s")}})
	require.NoError(t, err)
	c, err := console.New()
	require.NoError(t, err)
	srv, err := api.New(api.Deps{Logger: quiet, Extra: []api.Route{intake.Route(), c.Route()}}, api.Config{})
	require.NoError(t, err)
	mounted := map[string]bool{}
	for _, rt := range srv.Routes() {
		op := strings.ToLower(rt.Method) + " " + rt.Pattern
		mounted[op] = true
		require.Contains(t, doc.Paths[rt.Pattern], strings.ToLower(rt.Method), "%s is mounted but not documented", op)
	}
	// The key's scope is declared where a generated client reads it: every
	// authenticated operation names the bearer scheme and its scope, every
	// public one says it needs none.
	var full struct {
		Servers  []struct{ URL string } `json:"servers"`
		Security []map[string][]string  `json:"security"`
		Paths    map[string]map[string]struct {
			Security *[]map[string][]string `json:"security"`
		} `json:"paths"`
	}
	require.NoError(t, json.Unmarshal(raw, &full))
	require.NotEmpty(t, full.Servers, "servers: a generated client needs a base URL")
	for _, rt := range srv.Routes() {
		op := full.Paths[rt.Pattern][strings.ToLower(rt.Method)]
		name := rt.Method + " " + rt.Pattern
		switch {
		case rt.Public:
			require.NotNil(t, op.Security, "%s is public: security: [] says so", name)
			require.Empty(t, *op.Security, name)
		default:
			require.NotNil(t, op.Security, "%s needs a key and does not say so", name)
			require.Equal(t, []map[string][]string{{"bearer": {rt.Scope}}}, *op.Security, name)
		}
	}
	for path, ops := range doc.Paths {
		for method := range ops {
			if method == "parameters" {
				continue
			}
			require.True(t, mounted[method+" "+path], "%s %s is documented but not mounted", method, path)
		}
	}
}
