package api_test

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/domain/pricing"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
	"github.com/afterok/afterok/handlers/edge/api"
	"github.com/afterok/afterok/handlers/edge/console"
	"github.com/afterok/afterok/handlers/edge/receipts"
	"github.com/afterok/afterok/handlers/provider/sim"
)

// openapiDoc is openapi.json with its schemas compiled by a JSON Schema
// 2020-12 validator (the dialect of OpenAPI 3.1), formats asserted.
type openapiDoc struct {
	Paths    map[string]map[string]json.RawMessage
	compiler *jsonschema.Compiler
	raw      map[string]any
}

const docURL = "https://afterok.invalid/openapi.json"

func loadOpenAPI(t *testing.T) *openapiDoc {
	t.Helper()
	raw, err := os.ReadFile("openapi.json")
	require.NoError(t, err)
	d := &openapiDoc{compiler: jsonschema.NewCompiler()}
	require.NoError(t, json.Unmarshal(raw, &struct {
		Paths *map[string]map[string]json.RawMessage `json:"paths"`
	}{&d.Paths}))
	require.NoError(t, json.Unmarshal(raw, &d.raw))
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	require.NoError(t, err)
	d.compiler.DefaultDraft(jsonschema.Draft2020)
	d.compiler.AssertFormat()
	require.NoError(t, d.compiler.AddResource(docURL, doc))
	return d
}

// documented lists every "method path status" the document promises.
func (d *openapiDoc) documented() []string {
	var out []string
	for path, ops := range d.Paths {
		for method, raw := range ops {
			if method == "parameters" {
				continue
			}
			var op struct {
				Responses map[string]any `json:"responses"`
			}
			_ = json.Unmarshal(raw, &op)
			for status := range op.Responses {
				out = append(out, method+" "+path+" "+status)
			}
		}
	}
	sort.Strings(out)
	return out
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// check validates one real response against the document: the status is
// documented for the operation, the media type is one it lists, and a
// JSON body satisfies that media type's schema.
func (d *openapiDoc) check(t *testing.T, op string, status int, header http.Header, body []byte) {
	t.Helper()
	method, path, _ := strings.Cut(op, " ")
	base := "#/paths/" + pointerEscape(path) + "/" + method + "/responses/" + strconv.Itoa(status)
	resp, ok := d.raw["paths"].(map[string]any)[path].(map[string]any)[method].(map[string]any)["responses"].(map[string]any)[strconv.Itoa(status)].(map[string]any)
	require.True(t, ok, "%s answered %d, which the document does not list: %s", op, status, body)
	if r, ok := resp["$ref"].(string); ok {
		base = r
		name := strings.TrimPrefix(r, "#/components/responses/")
		resp = d.raw["components"].(map[string]any)["responses"].(map[string]any)[name].(map[string]any)
	}
	headers, _ := resp["headers"].(map[string]any)
	for name, h := range headers {
		if req, _ := h.(map[string]any)["required"].(bool); req {
			require.NotEmpty(t, header.Get(name), "%s %d: header %s", op, status, name)
		}
	}
	if _, has := resp["content"]; !has { // 204: nothing to check but that nothing came
		require.Empty(t, body, "%s %d", op, status)
		return
	}
	mt, _, err := mime.ParseMediaType(header.Get("Content-Type"))
	require.NoError(t, err, "%s %d: Content-Type %q", op, status, header.Get("Content-Type"))
	content := resp["content"].(map[string]any)
	require.Contains(t, content, mt, "%s %d: media type", op, status)
	if !strings.HasSuffix(mt, "json") {
		return
	}
	sch, err := d.compiler.Compile(docURL + base + "/content/" + pointerEscape(mt) + "/schema")
	require.NoError(t, err)
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	require.NoError(t, err, "%s %d: not JSON: %s", op, status, body)
	require.NoError(t, sch.Validate(v), "%s %d: %s", op, status, body)
}

// docCase is one real request and the documented response it must get.
type docCase struct {
	op     string // the documented operation: "get /v1/orders/{id}"
	status int
	srv    *httptest.Server
	method string // the request's method, when not the operation's (405)
	path   string
	key    string
	body   string
	hdr    []string
	// trickle sends body a byte every 100 ms (a client too slow for the
	// server's body deadline: 408).
	trickle bool
}

// trickleReader gives one byte per read, 100 ms apart.
type trickleReader struct{ rest []byte }

func (r *trickleReader) Read(p []byte) (int, error) {
	if len(r.rest) == 0 {
		return 0, io.EOF
	}
	time.Sleep(100 * time.Millisecond) // the pace is the point: a slow client, not a wait for a result
	p[0], r.rest = r.rest[0], r.rest[1:]
	return 1, nil
}

func (c docCase) send(t *testing.T) (int, http.Header, []byte) {
	t.Helper()
	method := c.method
	if method == "" {
		method = strings.ToUpper(strings.Fields(c.op)[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var rd io.Reader
	if c.body != "" {
		rd = strings.NewReader(c.body)
	}
	if c.trickle {
		rd = &trickleReader{rest: []byte(c.body)}
	}
	req, err := http.NewRequestWithContext(ctx, method, c.srv.URL+c.path, rd)
	require.NoError(t, err)
	if c.key != "" {
		req.Header.Set("Authorization", "Bearer "+c.key)
	}
	if c.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(c.hdr); i += 2 {
		req.Header.Set(c.hdr[i], c.hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	if strings.HasPrefix(res.Header.Get("Content-Type"), "text/event-stream") {
		// An endless stream: its first record is enough.
		buf := make([]byte, 64)
		n, _ := io.ReadAtLeast(res.Body, buf, 1)
		return res.StatusCode, res.Header, buf[:n]
	}
	raw, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, res.Header, raw
}

// signReceipts signs a receipts body as a provider does.
func signReceipts(secret []byte, body string) []string {
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts + "." + body))
	return []string{"X-Sandbox-Signature", "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))}
}

// TestEveryDocumentedResponse sends, to a real server with a real
// PostgreSQL, a request for every response of every operation in
// openapi.json, validates each answer against the document's schema, and
// fails when the document lists a response no case produces: the
// document cannot promise what nobody checked.
func TestEveryDocumentedResponse(t *testing.T) {
	doc := loadOpenAPI(t)
	secret := []byte("receipts-secret")
	intakeFor := func(store *eventstore.Store) api.Route {
		in, err := receipts.New(receipts.Config{Store: store, Providers: map[string][]byte{"sim-a": secret}, Logger: quiet})
		require.NoError(t, err)
		return in.Route()
	}

	// The main server: the API, the receipt intake and the projections.
	policy := accept.DefaultPolicy()
	policy.MaxMessages = 3
	main := &readEnv{env: newEnvWith(t, api.Config{RateLimit: 10_000, RateBurst: 10_000}, policy, intakeFor, consoleRoute(t))}
	main.project()
	t.Cleanup(func() { main.stop() })
	c := main.account(10_000_000)
	adm := main.account(1_000_000, accounts.AllScopes...)
	wo := main.account(1_000_000, accounts.ScopeOrdersWrite)
	ro := main.account(1_000_000, accounts.ScopeMessagesRead)
	poor := main.account(10)
	orderID, ids := main.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered)
	main.advance(ids[0], queue, route("sim-a"), submit, deliver)
	main.advance(ids[1], queue, route("sim-a"), failWith("expired", "expiry"))
	main.caughtUp()
	msg := ids[0]
	first := main.do("POST", "/v1/orders", c.APIKey, order(sim.ExampleDelivered), "Idempotency-Key", "doc-1")
	require.Equal(t, 202, first.status, "%s", first.raw)

	// A server whose account may make one request (then 429), and one
	// whose database is away (503).
	limited := newEnv(t, api.Config{RateLimit: 0.0001, RateBurst: 1}, accept.DefaultPolicy())
	lk := limited.account(1_000_000, accounts.AllScopes...)
	require.Equal(t, 200, limited.do("GET", "/v1/account", lk.APIKey, nil).status)
	dead := deadServer(t, intakeFor)
	// A server that wants a body at 1,000 bytes/s after 200 ms (408).
	slow := newEnvWith(t, api.Config{BodyGrace: 200 * time.Millisecond, BodyMinRate: 1000}, accept.DefaultPolicy(), intakeFor)
	sk := slow.account(1_000_000, accounts.AllScopes...)

	unknown := "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	srv := main.srv
	ok := func(op, path, key string) docCase {
		return docCase{op: op, status: 200, srv: srv, path: path, key: key}
	}
	with := func(c docCase, status int, path, key string) docCase {
		c.status, c.path, c.key = status, path, key
		return c
	}
	var cases []docCase
	// Every authenticated GET: 200, 401, 403 (a key without its scope),
	// 405, 429, 503, and the 400s and 404s it has.
	type getOp struct {
		op, path, key, wrongScope string
		bad, missing              string // a 400 and a 404 request path, if the operation has them
	}
	gets := []getOp{
		{"get /v1/orders/{id}", "/v1/orders/" + orderID, c.APIKey, wo.APIKey, "", "/v1/orders/" + unknown},
		{"get /v1/orders/{id}/messages", "/v1/orders/" + orderID + "/messages?state=expired", c.APIKey, wo.APIKey,
			"/v1/orders/" + orderID + "/messages?limit=0", "/v1/orders/" + unknown + "/messages"},
		{"get /v1/messages", "/v1/messages?to=" + sim.ExampleDelivered[1:], c.APIKey, wo.APIKey, "/v1/messages?limit=x", ""},
		{"get /v1/messages/{id}", "/v1/messages/" + msg, c.APIKey, wo.APIKey, "/v1/messages/" + msg + "?as_of=yesterday", "/v1/messages/" + unknown},
		{"get /v1/messages/{id}/events", "/v1/messages/" + msg + "/events", c.APIKey, wo.APIKey, "", "/v1/messages/" + unknown + "/events"},
		{"get /v1/events", "/v1/events?type=MessageDelivered", c.APIKey, wo.APIKey, "/v1/events?limit=0", ""},
		{"get /v1/events/stream", "/v1/events/stream", c.APIKey, wo.APIKey, "/v1/events/stream?heartbeat=0", ""},
		{"get /v1/accounts/{id}", "/v1/accounts/" + c.AccountID, c.APIKey, wo.APIKey, "", "/v1/accounts/" + adm.AccountID},
		{"get /v1/accounts/{id}/events", "/v1/accounts/" + c.AccountID + "/events?limit=2", c.APIKey, wo.APIKey,
			"/v1/accounts/" + c.AccountID + "/events?cursor=x", "/v1/accounts/" + adm.AccountID + "/events"},
		{"get /v1/providers/stats", "/v1/providers/stats", adm.APIKey, c.APIKey, "/v1/providers/stats?since=noon", ""},
		{"get /v1/account", "/v1/account", c.APIKey, wo.APIKey, "", ""},
		{"get /v1/accounts", "/v1/accounts?limit=2", adm.APIKey, c.APIKey, "/v1/accounts?cursor=x", ""},
		{"get /v1/account/keys", "/v1/account/keys", c.APIKey, wo.APIKey, "", ""},
		{"get /v1/orders", "/v1/orders?state=executing", c.APIKey, wo.APIKey, "/v1/orders?state=done", ""},
	}
	for _, g := range gets {
		base := ok(g.op, g.path, g.key)
		cases = append(cases, base, with(base, 401, g.path, ""), with(base, 403, g.path, g.wrongScope))
		wrong := with(base, 405, g.path, g.key)
		wrong.method = "DELETE"
		cases = append(cases, wrong)
		lim := with(base, 429, g.path, lk.APIKey)
		lim.srv = limited.srv
		down := with(base, 503, g.path, g.key)
		down.srv = dead
		cases = append(cases, lim, down)
		if g.bad != "" {
			cases = append(cases, with(base, 400, g.bad, g.key))
		}
		if g.missing != "" {
			cases = append(cases, with(base, 404, g.missing, g.key))
		}
	}

	post := func(status int, key, body string, hdr ...string) docCase {
		return docCase{op: "post /v1/orders", status: status, srv: srv, path: "/v1/orders", key: key, body: body, hdr: hdr}
	}
	good := `{"messages":[{"to":"` + sim.ExampleDelivered + `","body":"Hi"}],"metadata":{"ref":"A-1"}}`
	cases = append(cases,
		post(202, c.APIKey, good),
		post(400, c.APIKey, `{"messages": [`),
		post(401, "", good),
		post(402, poor.APIKey, good),
		post(403, ro.APIKey, good),
		post(409, c.APIKey, good, "Idempotency-Key", "doc-1"),
		post(413, c.APIKey, `{"to":["`+strings.Repeat(sim.ExampleDelivered+`","`, 3)+sim.ExampleDelivered+`"],"body":"x"}`),
		post(422, c.APIKey, `{"messages":[{"to":"+49","body":"Hi"}]}`),
	)
	wrong := post(405, c.APIKey, "")
	wrong.method = "DELETE"
	lim := post(429, lk.APIKey, good)
	lim.srv = limited.srv
	down := post(503, c.APIKey, good)
	down.srv = dead
	slowOrder := post(408, sk.APIKey, good)
	slowOrder.srv, slowOrder.trickle = slow.srv, true
	cases = append(cases, wrong, lim, down, slowOrder)

	receipt := `{"receipts":[{"id":"p-1","reference":"` + unknown + `","attempt":1,"status":"delivered","part":1,"parts":1,"done_at":"` + time.Now().UTC().Format(time.RFC3339) + `"}]}`
	rcpt := func(status int, body string, hdr []string) docCase {
		return docCase{op: "post /v1/receipts/{provider}", status: status, srv: srv, path: "/v1/receipts/sim-a", body: body, hdr: hdr}
	}
	rdown := rcpt(503, receipt, signReceipts(secret, receipt))
	rdown.srv = dead
	rwrong := rcpt(405, "", nil)
	rwrong.method = "GET"
	refusedOne := `{"receipts":[{"id":"p-2","reference":"` + unknown + `","attempt":2147483648,"status":"delivered","part":1,"parts":1,"done_at":"` + time.Now().UTC().Format(time.RFC3339) + `"}]}`
	huge := `{"receipts":[` + strings.Repeat(" ", 5<<20) + `]}`
	slowReceipt := rcpt(408, receipt, signReceipts(secret, receipt))
	slowReceipt.srv, slowReceipt.trickle = slow.srv, true
	cases = append(cases, slowReceipt)
	cases = append(cases,
		rcpt(200, receipt, signReceipts(secret, receipt)),
		rcpt(200, refusedOne, signReceipts(secret, refusedOne)),
		rcpt(413, huge, signReceipts(secret, huge)),
		rcpt(400, `{"receipts": 5}`, signReceipts(secret, `{"receipts": 5}`)),
		rcpt(401, receipt, nil),
		rdown, rwrong)

	// The cancel endpoints: a message of an order nobody dispatches stays
	// accepted, so it can be canceled; a delivered one cannot.
	toCancel, cancelIDs := main.placeOrder(c.APIKey, sim.ExampleDelivered, sim.ExampleDelivered)
	for _, tc := range []struct{ op, path, missing string }{
		{"post /v1/messages/{id}/cancel", "/v1/messages/" + cancelIDs[0] + "/cancel", "/v1/messages/" + unknown + "/cancel"},
		{"post /v1/orders/{id}/cancel", "/v1/orders/" + toCancel + "/cancel", "/v1/orders/" + unknown + "/cancel"},
	} {
		base := docCase{op: tc.op, status: 200, srv: srv, path: tc.path, key: c.APIKey, body: `{"reason":"the customer called it off"}`}
		cases = append(cases, base, with(base, 401, tc.path, ""), with(base, 403, tc.path, ro.APIKey),
			with(base, 404, tc.missing, c.APIKey))
		bad := with(base, 400, tc.path, c.APIKey)
		bad.body = `{"reason":5}`
		big := with(base, 413, tc.path, c.APIKey)
		big.body = `{"reason":"` + strings.Repeat("x", 9<<10) + `"}`
		wrong := with(base, 405, tc.path, c.APIKey)
		wrong.method, wrong.body = "GET", ""
		lim := with(base, 429, tc.path, lk.APIKey)
		lim.srv = limited.srv
		down := with(base, 503, tc.path, c.APIKey)
		down.srv = dead
		cases = append(cases, bad, big, wrong, lim, down)
	}
	cases = append(cases, docCase{op: "post /v1/messages/{id}/cancel", status: 409, srv: srv,
		path: "/v1/messages/" + msg + "/cancel", key: c.APIKey})
	cases = append(cases, redriveCases(t, main, policy, srv, limited, lk, dead, c, ro)...)
	cases = append(cases, accountAndKeyCases(t, main, srv, limited, lk, dead, adm, c, wo)...)
	cases = append(cases, webhookCases(t, srv, c, wo)...)

	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		op := "get " + p
		w := ok(op, p, "")
		w.status, w.method = 405, "POST"
		cases = append(cases, ok(op, p, ""), w)
	}
	cases = append(cases, docCase{op: "get /readyz", status: 503, srv: dead, path: "/readyz"})
	// The console: its page at a deep link, an asset, a file it lacks, a
	// method it does not take.
	page := ok("get /console/", "/console/messages/"+msg, "")
	noFile := with(page, 404, "/console/assets/nope.js", "")
	notGet := with(page, 405, "/console/", "")
	notGet.method = "POST"
	cases = append(cases, page, ok("get /console/", "/console/assets/app.js", ""), noFile, notGet)

	// The requests a client would send satisfy the document too.
	for schema, body := range map[string]string{"#/components/schemas/OrderRequest": good,
		"#/components/schemas/OpenAccountRequest": openAccountBody, "#/components/schemas/CreditRequest": creditBody,
		"#/paths/~1v1~1receipts~1{provider}/post/requestBody/content/application~1json/schema": receipt} {
		sch, err := doc.compiler.Compile(docURL + schema)
		require.NoError(t, err)
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(body))
		require.NoError(t, err)
		require.NoError(t, sch.Validate(v), schema)
	}

	hit := map[string]bool{}
	for _, tc := range cases {
		name := fmt.Sprintf("%s %d", tc.op, tc.status)
		t.Run(name, func(t *testing.T) {
			status, header, body := tc.send(t)
			require.Equal(t, tc.status, status, "%s %s: %s", tc.method, tc.path, body)
			doc.check(t, tc.op, status, header, body)
		})
		hit[tc.op+" "+strconv.Itoa(tc.status)] = true
	}
	for _, r := range doc.documented() {
		require.True(t, hit[r], "openapi.json documents %s, and no case produces it", r)
	}
}

// redriveCases are the re-drive endpoints' requests, one per documented
// response, in the order they must run: the dry run before the re-drive,
// the repeat (409) after it. An account that paid for its one message
// and has nothing left is the 402.
func redriveCases(t *testing.T, main *readEnv, policy accept.Policy, srv *httptest.Server, limited *env, lk accounts.Created,
	dead *httptest.Server, c, ro accounts.Created) []docCase {
	price, err := policy.Prices.Price("DE", 1)
	require.NoError(t, err)
	tight := main.account(price.AmountMicros)
	failed := func(key string, n int) (string, []string) {
		to := make([]string, n)
		for i := range to {
			to[i] = sim.ExampleDelivered
		}
		id, ids := main.placeOrder(key, to...)
		for _, m := range ids {
			main.advance(m, queue, failWith("undeliverable", "delivery"))
		}
		return id, ids
	}
	tightOrder, tightIDs := failed(tight.APIKey, 1)
	redriveOrder, _ := failed(c.APIKey, 2)
	_, oneIDs := failed(c.APIKey, 1)
	unpricedOrder, unpricedIDs := failed(c.APIKey, 1)
	unknown := "01ARZ3NDEKTSV4RRFFQ69G5FAV"
	// The same store served under a price table that no longer prices
	// Germany: a copy that cannot be priced is 422, as POST /v1/orders
	// would answer, and nothing is written.
	frOnly, err := pricing.Parse([]byte(`{"currency": "EUR", "regions": {"FR": 65000}}`))
	require.NoError(t, err)
	repriced := policy
	repriced.Prices = frOnly
	acceptor := orders.New(main.store, time.Now, orders.Config{})
	t.Cleanup(acceptor.Close)
	reprice, err := api.New(api.Deps{Store: main.store, Accounts: main.accounts, Acceptor: acceptor, Policy: repriced,
		Registry: prometheus.NewRegistry(), Logger: quiet}, api.Config{RateLimit: 10_000, RateBurst: 10_000})
	require.NoError(t, err)
	repricedSrv := httptest.NewServer(reprice)
	t.Cleanup(repricedSrv.Close)
	var cases []docCase
	for _, path := range []string{"/v1/messages/" + unpricedIDs[0] + "/redrive", "/v1/orders/" + unpricedOrder + "/redrive"} {
		op := "post /v1/messages/{id}/redrive"
		if strings.HasPrefix(path, "/v1/orders/") {
			op = "post /v1/orders/{id}/redrive"
		}
		cases = append(cases, docCase{op: op, status: 422, srv: repricedSrv, path: path, key: c.APIKey,
			body: `{"reason":"prices changed since"}`})
	}
	for _, tc := range []struct{ op, path, missing, tight string }{
		{"post /v1/messages/{id}/redrive", "/v1/messages/" + oneIDs[0] + "/redrive", "/v1/messages/" + unknown + "/redrive",
			"/v1/messages/" + tightIDs[0] + "/redrive"},
		{"post /v1/orders/{id}/redrive", "/v1/orders/" + redriveOrder + "/redrive", "/v1/orders/" + unknown + "/redrive",
			"/v1/orders/" + tightOrder + "/redrive"},
	} {
		base := docCase{op: tc.op, status: 202, srv: srv, path: tc.path, key: c.APIKey, body: `{"reason":"the carrier's outage is over"}`}
		at := func(status int, path, key, body string) docCase {
			d := base
			d.status, d.path, d.key, d.body = status, path, key, body
			return d
		}
		wrong := at(405, tc.path, c.APIKey, "")
		wrong.method = "GET"
		lim := at(429, tc.path, lk.APIKey, base.body)
		lim.srv = limited.srv
		down := at(503, tc.path, c.APIKey, base.body)
		down.srv = dead
		cases = append(cases,
			at(200, tc.path, c.APIKey, `{"reason":"how many?","dry_run":true,"failure_codes":["undeliverable"]}`),
			base,
			at(409, tc.path, c.APIKey, base.body),
			at(400, tc.path, c.APIKey, `{"reason":5}`),
			at(401, tc.path, "", base.body),
			at(402, tc.tight, tight.APIKey, base.body),
			at(403, tc.path, ro.APIKey, base.body),
			at(404, tc.missing, c.APIKey, base.body),
			at(413, tc.path, c.APIKey, `{"reason":"`+strings.Repeat("x", 17<<10)+`"}`),
			wrong, lim, down)
	}
	return cases
}

// consoleRoute mounts the console, as afterok does.
func consoleRoute(t *testing.T) func(*eventstore.Store) api.Route {
	c, err := console.New()
	require.NoError(t, err)
	return func(*eventstore.Store) api.Route { return c.Route() }
}

const (
	openAccountBody = `{"name":"Globex","credit_micros":5000000,"currency":"EUR","countries":["DE"],"reason":"signed up"}`
	creditBody      = `{"amount_micros":1000000,"reason":"invoice 117 paid"}`
)

// accountAndKeyCases are the requests of the account (admin) and key
// operations that are not GETs, one per documented response.
func accountAndKeyCases(t *testing.T, main *readEnv, srv *httptest.Server, limited *env, lk accounts.Created,
	dead *httptest.Server, adm, c, wo accounts.Created) []docCase {
	revocable, err := main.accounts.IssueKey(context.Background(), c.AccountID, nil, nil, accounts.Action{Actor: "cli:test"})
	require.NoError(t, err)
	huge := `{"reason":"` + strings.Repeat("x", 70<<10) + `"}`
	credits := "/v1/accounts/" + c.AccountID + "/credits"
	revoke := "/v1/account/keys/" + revocable.KeyID
	var cases []docCase
	for _, op := range []struct {
		op, path, key, body, bad, wrongScope, missing string
		created                                       int
	}{
		{"post /v1/accounts", "/v1/accounts", adm.APIKey, openAccountBody, `{"name":"x","credit_micros":0}`, c.APIKey, "", 201},
		{"post /v1/accounts/{id}/credits", credits, adm.APIKey, creditBody, `{"amount_micros":1,"reason":"\u0000"}`, c.APIKey,
			"/v1/accounts/01ARZ3NDEKTSV4RRFFQ69G5FAV/credits", 201},
		{"post /v1/account/keys", "/v1/account/keys", c.APIKey, `{"scopes":["messages:read"]}`, `{"scopes":["root"]}`, wo.APIKey, "", 201},
		{"delete /v1/account/keys/{id}", revoke, c.APIKey, `{"reason":"leaked"}`, `{"reason":"\ud800"}`, wo.APIKey,
			"/v1/account/keys/key_01arz3ndektsv4rrffq69g5fav", 204},
	} {
		base := docCase{op: op.op, srv: srv, path: op.path, key: op.key}
		at := func(status int, key, body string) docCase {
			d := base
			d.status, d.key, d.body = status, key, body
			return d
		}
		// The bad request first: a revoked key is no longer there to refuse.
		cases = append(cases, at(400, op.key, op.bad), at(op.created, op.key, op.body), at(401, "", op.body),
			at(403, op.wrongScope, op.body))
		lim := at(429, lk.APIKey, op.body)
		lim.srv = limited.srv
		down := at(503, op.key, op.body)
		down.srv = dead
		cases = append(cases, lim, down)
		if strings.HasPrefix(op.op, "post") {
			cases = append(cases, at(413, op.key, huge))
		}
		if op.missing != "" {
			missing := at(404, op.key, op.body)
			missing.path = op.missing
			cases = append(cases, missing)
			wrong := at(405, op.key, "")
			wrong.method = "GET"
			cases = append(cases, wrong)
		}
	}
	// A credit's Idempotency-Key used again for another credit.
	first := main.do("POST", credits, adm.APIKey, creditBody, "Idempotency-Key", "doc-credit")
	require.Equal(t, 201, first.status, "%s", first.raw)
	cases = append(cases, docCase{op: "post /v1/accounts/{id}/credits", status: 409, srv: srv, path: credits, key: adm.APIKey,
		body: `{"amount_micros":2,"reason":"another"}`, hdr: []string{"Idempotency-Key", "doc-credit"}})
	return cases
}

// newEnvWith is newEnv with extra routes mounted, built from the env's
// own store (the receipt intake).
func newEnvWith(t *testing.T, cfg api.Config, policy accept.Policy, extra ...func(*eventstore.Store) api.Route) *env {
	t.Helper()
	e := newEnv(t, cfg, policy)
	var routes []api.Route
	for _, r := range extra {
		routes = append(routes, r(e.store))
	}
	acceptor := orders.New(e.store, time.Now, orders.Config{})
	t.Cleanup(acceptor.Close)
	var err error
	e.api, err = api.New(api.Deps{Store: e.store, Accounts: e.accounts, Acceptor: acceptor, Policy: policy,
		Registry: prometheus.NewRegistry(), Logger: quiet, Extra: routes,
		Ready: map[string]func(context.Context) error{"postgres": e.db.Pool.Ping}}, cfg)
	require.NoError(t, err)
	e.srv.Config.Handler = e.api
	return e
}

// deadServer is the API against a PostgreSQL that is not there (nothing
// listens on port 1): every request that needs the database meets a
// connection error.
func deadServer(t *testing.T, extra ...func(*eventstore.Store) api.Route) *httptest.Server {
	t.Helper()
	cfg, err := pgxpool.ParseConfig("postgres://root@127.0.0.1:1/afterok?sslmode=disable&connect_timeout=2")
	require.NoError(t, err)
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := eventstore.New(pool)
	var routes []api.Route
	for _, r := range extra {
		routes = append(routes, r(store))
	}
	acceptor := orders.New(store, time.Now, orders.Config{})
	t.Cleanup(acceptor.Close)
	s, err := api.New(api.Deps{Store: store, Accounts: accounts.New(store, time.Now), Acceptor: acceptor,
		Policy: accept.DefaultPolicy(), Registry: prometheus.NewRegistry(), Logger: quiet, Extra: routes,
		Ready: map[string]func(context.Context) error{"postgres": pool.Ping}}, api.Config{})
	require.NoError(t, err)
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}
