package provider_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/provider"
)

// The simulator never misbehaves at the protocol level, so these tests put
// a scripted server on 127.0.0.1 in its place: it records the request and
// gives one canned answer.

type canned struct {
	status int
	header map[string]string
	body   string
}

type seen struct {
	method, path, auth, key, contentType string
	body                                 map[string]any
}

func stub(t *testing.T, answer canned) (*provider.HTTP, *seen) {
	t.Helper()
	got := &seen{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		*got = seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Idempotency-Key"), r.Header.Get("Content-Type"), nil}
		_ = json.Unmarshal(raw, &got.body)
		for k, v := range answer.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(answer.status)
		_, _ = io.WriteString(w, answer.body)
	}))
	t.Cleanup(srv.Close)
	h, err := provider.NewHTTP(provider.HTTPConfig{Name: "sim-a", BaseURL: srv.URL + "/", APIKey: "key-a"})
	if err != nil {
		t.Fatal(err)
	}
	return h, got
}

func TestHTTPWireFormat(t *testing.T) {
	h, got := stub(t, canned{200, nil, `{"id":"p-1","status":"accepted","reference":"m","attempt":3}`})
	s := provider.Submission{MessageID: "m", Attempt: 3, To: "+4915112345678", From: "afterok", Body: "hi", Segments: 2}
	o := h.Submit(context.Background(), []provider.Submission{s})[0]
	if o.Err != nil || o.Result.ProviderMessageID != "p-1" || o.Result.Replayed {
		t.Fatalf("outcome %+v", o)
	}
	want := map[string]any{"reference": "m", "attempt": 3.0, "to": "+4915112345678", "from": "afterok", "body": "hi", "segments": 2.0}
	if got.method != "POST" || got.path != "/sim-a/v1/messages" || got.auth != "Bearer key-a" || got.key != "m:3" ||
		got.contentType != "application/json" || !equalJSON(got.body, want) {
		t.Fatalf("request %+v", got)
	}

	h, got = stub(t, canned{200, nil, `{"results":[{"reference":"m","attempt":3,"status":"accepted","id":"p-1"},{"reference":"n","attempt":1,"status":"accepted","id":"p-2"}]}`})
	out := h.Submit(context.Background(), []provider.Submission{s, {MessageID: "n", Attempt: 1, To: "+4915112345678", Body: "x", Segments: 1}})
	if out[0].Result.ProviderMessageID != "p-1" || out[1].Result.ProviderMessageID != "p-2" {
		t.Fatalf("outcomes %+v", out)
	}
	items, _ := got.body["messages"].([]any)
	first, _ := items[0].(map[string]any)
	if got.path != "/sim-a/v1/messages/batch" || got.key != "" || len(items) != 2 || first["idempotency_key"] != "m:3" {
		t.Fatalf("batch request %+v", got)
	}
}

func equalJSON(a, b map[string]any) bool {
	x, _ := json.Marshal(a)
	y, _ := json.Marshal(b)
	return string(x) == string(y)
}

func TestHTTPAnswersItCannotTakeAtFace(t *testing.T) {
	one := []provider.Submission{{MessageID: "m", Attempt: 1, To: "+4915112345678", Body: "hi", Segments: 1}}
	two := append(one, provider.Submission{MessageID: "n", Attempt: 1, To: "+4915112345678", Body: "hi", Segments: 1})
	cases := []struct {
		name       string
		answer     canned
		batch      []provider.Submission
		code       string
		permanent  bool
		status     int
		retryAfter time.Duration
	}{
		{"throttled", canned{429, map[string]string{"Retry-After": "3"}, `{"error":{"code":"throttled","message":"slow down"}}`}, one, domain.CodeThrottled, false, 429, 3 * time.Second},
		{"throttled batch", canned{429, map[string]string{"Retry-After": "2"}, `{"error":{"code":"throttled"}}`}, two, domain.CodeThrottled, false, 429, 2 * time.Second},
		{"rejected", canned{422, nil, `{"error":{"code":"rejected","message":"spam"}}`}, one, domain.CodeRejected, true, 422, 0},
		{"5xx without a body", canned{502, nil, ``}, one, domain.CodeProviderUnavailable, false, 502, 0},
		{"not JSON", canned{200, nil, `<html>`}, one, domain.CodeProviderUnavailable, false, 200, 0},
		{"someone else's acceptance", canned{200, nil, `{"id":"p","status":"accepted","reference":"x","attempt":1}`}, one, domain.CodeProviderUnavailable, false, 200, 0},
		{"accepted without an id", canned{200, nil, `{"status":"accepted","reference":"m","attempt":1}`}, one, domain.CodeProviderUnavailable, false, 200, 0},
		{"oversized", canned{200, nil, `{"id":"` + strings.Repeat("p", 100<<10) + `"}`}, one, domain.CodeProviderUnavailable, false, 200, 0},
		{"redirect", canned{302, map[string]string{"Location": "/elsewhere"}, ``}, one, domain.CodeProviderUnavailable, false, 302, 0},
		{"results missing", canned{200, nil, `{"results":[{"reference":"m","attempt":1,"status":"accepted","id":"p"}]}`}, two, domain.CodeProviderUnavailable, false, 200, 0},
		{"results out of order", canned{200, nil, `{"results":[{"reference":"n","attempt":1,"status":"accepted","id":"p"},{"reference":"m","attempt":1,"status":"accepted","id":"q"}]}`}, two, domain.CodeProviderUnavailable, false, 0, 0},
		{"unknown item code, not retryable", canned{200, nil, `{"results":[{"reference":"m","attempt":1,"status":"failed","error":{"code":"content_blocked","retryable":false}},{"reference":"n","attempt":1,"status":"failed","error":{"code":"content_blocked","retryable":false}}]}`}, two, domain.CodeRejected, true, 0, 0},
		{"unknown item status", canned{200, nil, `{"results":[{"reference":"m","attempt":1,"status":"queued"},{"reference":"n","attempt":1,"status":"queued"}]}`}, two, domain.CodeProviderUnavailable, false, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h, _ := stub(t, c.answer)
			out := h.Submit(context.Background(), c.batch)
			if len(out) != len(c.batch) {
				t.Fatalf("%d outcomes for %d submissions", len(out), len(c.batch))
			}
			for _, o := range out {
				pe := failure(t, o)
				if pe.Failure.Code != c.code || pe.Failure.Permanent != c.permanent || pe.StatusCode != c.status ||
					pe.RetryAfter != c.retryAfter || pe.Failure.Stage != domain.StageSubmit {
					t.Fatalf("got %d %+v retry after %v", pe.StatusCode, pe.Failure, pe.RetryAfter)
				}
			}
		})
	}
}
