package api

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
)

// FuzzDecodeOrder feeds arbitrary bodies through the streaming decoder and
// the validator: whatever comes in, the answer is a plan, a typed client
// error (invalid_request, too_large, validation_failed) — never a panic,
// never an untyped error that would become a 500.
func FuzzDecodeOrder(f *testing.F) {
	for _, seed := range []string{
		`{"messages":[{"to":"+4915112345678","body":"hi"}]}`,
		`{"to":["+4915112345678","+4915112340001"],"body":"sale €","from":"Acme","validity_seconds":60}`,
		`{"messages":[{"to":"+49","body":""}],"metadata":{"a":1}}`,
		`{"messages":[],"to":[]}`,
		`{"messages":[{"to":1}]}`,
		`{"body":"x"}`,
		`[1,2]`, `{`, `null`, `{"validity_seconds":1e99}`, `{"metadata":"x"}`,
		"{\"messages\":[{\"to\":\"+4915112345678\",\"body\":\"\xff\xfe\"}]}",
		`{"messages":[{"to":"+4915112345678","body":"\u0000\ud800"}],"metadata":{"\u0000":"\udc00"}}`,
		`{"to":["+4915112345678"],"body":"x","body":"y","validity_seconds":"60"}`,
	} {
		f.Add([]byte(seed))
	}
	pol := accept.DefaultPolicy()
	pol.MaxMessages = 50
	f.Fuzz(func(t *testing.T, body []byte) {
		acct := &domain.Account{ID: "a", Currency: "EUR", Balance: 1 << 40}
		p := accept.NewPlanner(pol, acct)
		err := decodeOrder(bytes.NewReader(body), p, time.Now())
		if err == nil {
			var plan *accept.Plan
			plan, err = p.Finish()
			if err == nil {
				var sum int64
				for _, m := range plan.Messages {
					if m.Segments < 1 || m.Price.AmountMicros <= 0 || m.To == "" {
						t.Fatalf("accepted an unpriced or empty message: %+v", m)
					}
					// What the store (jsonb) cannot hold must never reach the commit.
					for _, s := range []string{m.To, m.Body, m.From} {
						if !utf8.ValidString(s) || strings.ContainsRune(s, 0) || strings.ContainsRune(s, utf8.RuneError) && !sendsReplacementChar(body) {
							t.Fatalf("accepted text the store cannot hold or that was altered: %q", s)
						}
					}
					sum += m.Price.AmountMicros
				}
				if md := plan.ClientMetadata; md != nil && (!jsontext.Value(md).IsValid() || bytes.Contains(md, []byte(`\u0000`))) {
					t.Fatalf("accepted metadata the store cannot hold: %q", md)
				}
				if sum != plan.Total.AmountMicros || len(plan.Messages) == 0 {
					t.Fatalf("total %d, messages sum to %d", plan.Total.AmountMicros, sum)
				}
				return
			}
		}
		var ve *accept.ValidationError
		if !(errors.Is(err, errInvalidRequest) || errors.Is(err, errTooLarge) || errors.Is(err, accept.ErrTooLarge) || errors.As(err, &ve)) {
			t.Fatalf("untyped error for %q: %v", body, err)
		}
		if p, _ := problemFor(err, "", ""); p.Status >= 500 {
			t.Fatalf("client input became a %d: %v", p.Status, err)
		}
	})
}

// sendsReplacementChar reports whether a body holds U+FFFD itself (raw or
// escaped), so that finding it in a plan is not a sign of silent repair.
func sendsReplacementChar(body []byte) bool {
	return bytes.ContainsRune(body, utf8.RuneError) || bytes.Contains(bytes.ToLower(body), []byte(`\ufffd`))
}
