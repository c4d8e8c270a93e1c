package accept_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
)

// validMobile is a German mobile number that passes every check.
const validMobile = "+4915112345678"

func account(allowed ...string) *domain.Account {
	return &domain.Account{ID: "a", Currency: "EUR", AllowedCountries: allowed, Balance: 1_000_000_000}
}

func TestEveryBadMessageIsReported(t *testing.T) {
	p := accept.NewPlanner(accept.DefaultPolicy(), account())
	inputs := []accept.Input{
		{To: validMobile, Body: "fine"},
		{To: "", Body: "x"},
		{To: "004915112345678", Body: "x"},
		{To: "+49151", Body: "x"},
		{To: validMobile, Body: ""},
		{To: validMobile, Body: strings.Repeat("a", 153*10+1)},
		{To: validMobile, Body: "x", From: "ThisIsTooLongASender"},
		{To: validMobile, Body: "x", From: "Bad<Sender>"},
		{To: "+49", Body: "", From: "12"}, // three problems in one message
	}
	for i, in := range inputs {
		if err := p.Add(i, in); err != nil {
			t.Fatal(err)
		}
	}
	p.SetValidity(0)
	p.SetMetadata(json.RawMessage(`[1,2]`))
	_, err := p.Finish()
	var ve *accept.ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v", err)
	}
	type key struct {
		index       int
		field, code string
	}
	want := map[key]bool{
		{1, "to", accept.CodeRequired}:                  true,
		{2, "to", accept.CodeNotE164}:                   true,
		{3, "to", accept.CodeInvalidNumber}:             true,
		{4, "body", accept.CodeRequired}:                true,
		{5, "body", accept.CodeTooLong}:                 true,
		{6, "from", accept.CodeInvalidSender}:           true,
		{7, "from", accept.CodeInvalidSender}:           true,
		{8, "to", accept.CodeInvalidNumber}:             true,
		{8, "body", accept.CodeRequired}:                true,
		{8, "from", accept.CodeInvalidSender}:           true,
		{-1, "validity_seconds", accept.CodeOutOfRange}: true,
		{-1, "metadata", accept.CodeNotObject}:          true,
	}
	got := map[key]bool{}
	for _, fe := range ve.Errors {
		k := key{-1, fe.Field, fe.Code}
		if fe.Index != nil {
			k.index = *fe.Index
		}
		if fe.Detail == "" {
			t.Errorf("%+v has no detail", k)
		}
		got[k] = true
	}
	for k := range want {
		if !got[k] {
			t.Errorf("missing %+v", k)
		}
	}
	for k := range got {
		if !want[k] {
			t.Errorf("unexpected %+v", k)
		}
	}
}

func TestPlanPricesEveryMessage(t *testing.T) {
	p := accept.NewPlanner(accept.DefaultPolicy(), account())
	bodies := []string{"hello", strings.Repeat("a", 161), "emoji 😀", strings.Repeat("€", 81)}
	for i, b := range bodies {
		if err := p.Add(i, accept.Input{To: validMobile, Body: b, From: "Acme"}); err != nil {
			t.Fatal(err)
		}
	}
	p.SetValidity(3600)
	p.SetMetadata(json.RawMessage(`{"campaign":"x"}`))
	plan, err := p.Finish()
	if err != nil {
		t.Fatal(err)
	}
	wantSeg := []int{1, 2, 1, 2} // 81 € = 162 septets: two concatenated parts
	var total int64
	for i, m := range plan.Messages {
		if m.Segments != wantSeg[i] {
			t.Errorf("message %d: %d segments, want %d", i, m.Segments, wantSeg[i])
		}
		if m.Price.AmountMicros != int64(m.Segments)*75000 || m.Region != "DE" {
			t.Errorf("message %d priced %v in %s", i, m.Price, m.Region)
		}
		total += m.Price.AmountMicros
	}
	if plan.Total.AmountMicros != total || plan.Total.Currency != "EUR" || plan.ValiditySeconds != 3600 {
		t.Fatalf("plan %+v", plan)
	}
}

func TestDestinationsLimitedByAccount(t *testing.T) {
	p := accept.NewPlanner(accept.DefaultPolicy(), account("FR"))
	_ = p.Add(0, accept.Input{To: validMobile, Body: "x"})
	_, err := p.Finish()
	var ve *accept.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Code != accept.CodeDestinationNotAllowed {
		t.Fatalf("got %v", err)
	}
}

func TestOrderSizeLimits(t *testing.T) {
	pol := accept.DefaultPolicy()
	pol.MaxMessages = 3
	p := accept.NewPlanner(pol, account())
	for i := range 3 {
		if err := p.Add(i, accept.Input{To: validMobile, Body: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Add(3, accept.Input{To: validMobile, Body: "x"}); !errors.Is(err, accept.ErrTooLarge) {
		t.Fatalf("4th of 3: %v", err)
	}
	_, err := accept.NewPlanner(pol, account()).Finish()
	var ve *accept.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Field != "messages" {
		t.Fatalf("empty order: %v", err)
	}
}

func TestSenderRules(t *testing.T) {
	for from, ok := range map[string]bool{
		"Acme": true, "ACME Bank": true, "A": true, "12345": true, "+4915112345678": true, "Acme-Co_1.&": true,
		"12": false, "1234567890123456": false, "ElevenChars1": false, "Ünïcode": false, "+Acme": false, "12 34": false,
	} {
		p := accept.NewPlanner(accept.DefaultPolicy(), account())
		_ = p.Add(0, accept.Input{To: validMobile, Body: "x", From: from})
		_, err := p.Finish()
		if (err == nil) != ok {
			t.Errorf("sender %q: err %v, want ok=%v", from, err, ok)
		}
	}
}

func TestNotPricedAndCurrencyMismatch(t *testing.T) {
	acc := account()
	acc.Currency = "USD"
	p := accept.NewPlanner(accept.DefaultPolicy(), acc)
	_ = p.Add(0, accept.Input{To: validMobile, Body: "x"})
	_, err := p.Finish()
	var ve *accept.ValidationError
	if !errors.As(err, &ve) || ve.Errors[0].Code != accept.CodeNotPriced {
		t.Fatalf("got %v", err)
	}
}
