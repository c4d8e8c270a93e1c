// Package accept holds the rules an order must pass before afterok says
// 202: every message's destination, body, sender and price, the order's
// validity and size, and what the account may send. It turns a request
// into a Plan (what to append) or a ValidationError that lists every
// problem of every message, not just the first.
//
// It is pure: the HTTP layer decodes the request and feeds messages in one
// by one (so a 100,000-message order is never held twice), and the account
// view and price table are passed in.
package accept

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-json-experiment/json/jsontext"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/phone"
	"github.com/afterok/afterok/domain/pricing"
	"github.com/afterok/afterok/domain/sms"
)

// Stable per-field error codes, reported in validation_failed's errors[].
const (
	CodeRequired              = "required"
	CodeTooLong               = "too_long"
	CodeInvalidSender         = "invalid_sender"
	CodeDestinationNotAllowed = "destination_not_allowed"
	CodeOutOfRange            = "out_of_range"
	CodeConflict              = "conflicting_fields"
	CodeInvalidUTF8           = "invalid_utf8"
	CodeInvalidCharacter      = "invalid_character"
	CodeNotObject             = "not_an_object"
	// CodeNotE164, CodeInvalidNumber and CodeNotPriced come from the phone
	// and pricing packages.
	CodeNotE164       = phone.CodeNotE164
	CodeInvalidNumber = phone.CodeInvalidNumber
	CodeNotPriced     = pricing.CodeNotPriced
)

// Policy is the configurable part of the rules.
type Policy struct {
	MaxMessages     int // per order; above it the order is too large (default 100,000)
	MaxSegments     int // per message (default 10)
	MinValidity     time.Duration
	MaxValidity     time.Duration
	DefaultValidity time.Duration
	// SendAtTolerance is how far in the past a send_at may lie (a clock a
	// little behind ours); MaxSchedule how far ahead (default 60 s, 35 days).
	SendAtTolerance  time.Duration
	MaxSchedule      time.Duration
	MaxMetadataBytes int
	Prices           *pricing.Table
}

// DefaultPolicy is what `afterok dev` ships.
func DefaultPolicy() Policy {
	return Policy{MaxMessages: 100_000, MaxSegments: 10, MinValidity: time.Second, MaxValidity: 72 * time.Hour,
		DefaultValidity: 48 * time.Hour, SendAtTolerance: time.Minute, MaxSchedule: 35 * 24 * time.Hour,
		MaxMetadataBytes: 4096, Prices: pricing.Default()}
}

// FieldError is one problem with one field. Index is the message's
// position in the request, nil for order-level fields.
type FieldError struct {
	Index  *int   `json:"index"`
	Field  string `json:"field"`
	Code   string `json:"code"`
	Detail string `json:"detail"`
}

// ValidationError lists every problem found.
type ValidationError struct {
	Errors []FieldError
}

func (e *ValidationError) Error() string {
	if len(e.Errors) == 1 {
		return "validation failed: " + e.Errors[0].Detail
	}
	return fmt.Sprintf("validation failed: %d problems", len(e.Errors))
}

// ErrTooLarge is returned when an order has more messages than the policy
// allows.
var ErrTooLarge = errors.New("order too large")

// Input is one message as requested.
type Input struct {
	To   string
	Body string
	From string
	// NotUnicode names the fields ("to", "body", "from") whose text, as
	// sent, was not valid Unicode (invalid UTF-8, or an unpaired surrogate
	// escape in JSON). The decoder cannot hand such text over faithfully,
	// so it says which fields they were and the planner reports them.
	NotUnicode []string
}

// notUnicode reports whether field is one of in's undecodable fields.
func (in *Input) notUnicode(field string) bool {
	for _, f := range in.NotUnicode {
		if f == field {
			return true
		}
	}
	return false
}

const notUnicodeDetail = " is not valid Unicode text (invalid UTF-8 or an unpaired surrogate escape)"

// Planned is one message that passed, priced.
type Planned struct {
	To       string
	Region   string
	From     string
	Body     string
	Encoding sms.Encoding
	Segments int
	Price    domain.Money
}

// Plan is an order that passed every rule.
type Plan struct {
	Messages        []Planned
	Total           domain.Money
	ValiditySeconds int
	ClientMetadata  json.RawMessage
	// SendAt is when the messages are to go out (zero: at once). The
	// validity counts from it.
	SendAt time.Time
}

// Start is when the order's messages may first go out: SendAt, or now
// when they go at once (or send_at lay within the tolerance behind now).
func (p *Plan) Start(now time.Time) time.Time {
	if p.SendAt.After(now) {
		return p.SendAt
	}
	return now
}

// Planner checks an order message by message.
type Planner struct {
	policy  Policy
	account *domain.Account
	plan    Plan
	errs    []FieldError
	count   int
	// analysis of a broadcast's shared body, computed once
	lastBody string
	lastInfo sms.Info
}

// NewPlanner starts checking an order for account under policy.
func NewPlanner(policy Policy, account *domain.Account) *Planner {
	p := &Planner{policy: policy, account: account}
	p.plan.Total = domain.Zero(account.Currency)
	p.plan.ValiditySeconds = int(policy.DefaultValidity / time.Second)
	return p
}

// Grow preallocates room for n messages (when the count is known, as for a
// broadcast).
func (p *Planner) Grow(n int) {
	if n > 0 && n <= p.policy.MaxMessages {
		p.plan.Messages = make([]Planned, 0, n)
	}
}

func (p *Planner) fail(index int, field, code, detail string) {
	fe := FieldError{Field: field, Code: code, Detail: detail}
	if index >= 0 {
		i := index
		fe.Index = &i
	}
	p.errs = append(p.errs, fe)
}

// Add checks one message. It returns ErrTooLarge as soon as the order has
// more messages than allowed, so the caller can stop reading the request.
func (p *Planner) Add(index int, in Input) error {
	p.count++
	if p.count > p.policy.MaxMessages {
		return fmt.Errorf("%w: more than %d messages", ErrTooLarge, p.policy.MaxMessages)
	}
	ok := true
	var num phone.Number
	switch n, err := phone.Parse(in.To); {
	case in.notUnicode("to"):
		p.fail(index, "to", CodeInvalidUTF8, "to"+notUnicodeDetail)
		ok = false
	case in.To == "":
		p.fail(index, "to", CodeRequired, "to is required: an E.164 number such as +4915112345678")
		ok = false
	case err != nil:
		code := CodeInvalidNumber
		if errors.Is(err, phone.ErrNotE164) {
			code = CodeNotE164
		}
		p.fail(index, "to", code, fmt.Sprintf("%q: %v", in.To, err))
		ok = false
	case !p.account.Allows(n.Region):
		p.fail(index, "to", CodeDestinationNotAllowed, fmt.Sprintf("%s is in %s, which this account may not send to", in.To, n.Region))
		ok = false
	default:
		num = n
	}
	var info sms.Info
	switch {
	case in.notUnicode("body"), !utf8.ValidString(in.Body):
		p.fail(index, "body", CodeInvalidUTF8, "body"+notUnicodeDetail)
		ok = false
	case in.Body == "":
		p.fail(index, "body", CodeRequired, "body is required")
		ok = false
	case strings.IndexByte(in.Body, 0) >= 0:
		// No SMS encoding carries NUL, and the store (jsonb) cannot hold
		// it: refused here, before it can fail a commit.
		p.fail(index, "body", CodeInvalidCharacter, "body contains U+0000 (NUL), which a message cannot carry")
		ok = false
	default:
		if in.Body == p.lastBody {
			info = p.lastInfo
		} else {
			info = sms.Analyze(in.Body)
			p.lastBody, p.lastInfo = in.Body, info
		}
		if info.Segments > p.policy.MaxSegments {
			p.fail(index, "body", CodeTooLong, fmt.Sprintf("body needs %d segments (%s); at most %d are allowed",
				info.Segments, info.Encoding, p.policy.MaxSegments))
			ok = false
		}
	}
	if in.notUnicode("from") {
		p.fail(index, "from", CodeInvalidUTF8, "from"+notUnicodeDetail)
		ok = false
	} else if in.From != "" {
		if err := checkSender(in.From); err != nil {
			p.fail(index, "from", CodeInvalidSender, err.Error())
			ok = false
		}
	}
	if !ok {
		return nil
	}
	price, err := p.policy.Prices.Price(num.Region, info.Segments)
	if err != nil {
		p.fail(index, "to", CodeNotPriced, fmt.Sprintf("no price for %s (%s)", in.To, num.Region))
		return nil
	}
	if price.Currency != p.account.Currency {
		p.fail(index, "to", CodeNotPriced, fmt.Sprintf("prices are in %s, the account is in %s", price.Currency, p.account.Currency))
		return nil
	}
	total, err := p.plan.Total.Add(price)
	if err != nil {
		p.fail(index, "to", CodeOutOfRange, "the order's total price overflows")
		return nil
	}
	p.plan.Total = total
	p.plan.Messages = append(p.plan.Messages, Planned{To: num.E164, Region: num.Region, From: in.From, Body: in.Body,
		Encoding: info.Encoding, Segments: info.Segments, Price: price})
	return nil
}

// SetValidity checks the order's validity_seconds.
func (p *Planner) SetValidity(seconds int64) {
	lo, hi := int64(p.policy.MinValidity/time.Second), int64(p.policy.MaxValidity/time.Second)
	if seconds < lo || seconds > hi {
		p.fail(-1, "validity_seconds", CodeOutOfRange, fmt.Sprintf("validity_seconds must be from %d to %d", lo, hi))
		return
	}
	p.plan.ValiditySeconds = int(seconds)
}

// SetSendAt checks the order's send_at against now: not further in the
// past than the tolerance (a send_at just behind our clock is "now"), not
// further ahead than MaxSchedule.
func (p *Planner) SetSendAt(at, now time.Time) {
	switch {
	case at.Before(now.Add(-p.policy.SendAtTolerance)):
		p.fail(-1, "send_at", CodeOutOfRange, fmt.Sprintf("send_at %s is in the past (more than %s before now)",
			at.UTC().Format(time.RFC3339), p.policy.SendAtTolerance))
	case at.After(now.Add(p.policy.MaxSchedule)):
		p.fail(-1, "send_at", CodeOutOfRange, fmt.Sprintf("send_at %s is more than %s ahead; schedule at most %d days ahead",
			at.UTC().Format(time.RFC3339), p.policy.MaxSchedule, int(p.policy.MaxSchedule/(24*time.Hour))))
	default:
		p.plan.SendAt = at.UTC()
	}
}

// SetMetadata checks the order's client metadata (a JSON object the
// client gets back on every read).
func (p *Planner) SetMetadata(raw json.RawMessage) {
	switch {
	case len(raw) > p.policy.MaxMetadataBytes:
		p.fail(-1, "metadata", CodeTooLong, fmt.Sprintf("metadata is %d bytes; at most %d are allowed", len(raw), p.policy.MaxMetadataBytes))
	case len(raw) == 0 || raw[0] != '{':
		p.fail(-1, "metadata", CodeNotObject, "metadata must be a JSON object")
	default:
		if code, detail := checkMetadataText(raw); code != "" {
			p.fail(-1, "metadata", code, detail)
			return
		}
		p.plan.ClientMetadata = raw
	}
}

// checkMetadataText finds the first key or value of metadata, at any
// depth, that is not valid Unicode or holds U+0000: the store's jsonb
// refuses both, and a refusal at commit would fail every order committed
// with this one. It returns the code and detail, or "" when all is well.
func checkMetadataText(raw []byte) (code, detail string) {
	dec := jsontext.NewDecoder(bytes.NewReader(raw))
	for {
		tok, err := dec.ReadToken()
		if err == io.EOF {
			return "", ""
		}
		var se *jsontext.SyntacticError
		if errors.As(err, &se) {
			return CodeInvalidUTF8, fmt.Sprintf("metadata%s is not valid Unicode text (invalid UTF-8 or an unpaired surrogate escape)",
				pointerPath(se.JSONPointer))
		}
		if err != nil {
			return CodeNotObject, "metadata is not valid JSON: " + err.Error()
		}
		if tok.Kind() == '"' && strings.IndexByte(tok.String(), 0) >= 0 {
			return CodeInvalidCharacter, fmt.Sprintf("metadata%s contains U+0000 (NUL), which cannot be stored",
				pointerPath(dec.StackPointer()))
		}
	}
}

// pointerPath writes a JSON pointer as .a.b[2].c for a detail message.
func pointerPath(ptr jsontext.Pointer) string {
	var b strings.Builder
	for tok := range ptr.Tokens() {
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
		} else {
			b.WriteString("." + strconv.Quote(tok))
		}
	}
	return b.String()
}

// Conflict records a problem with the request's shape that is not one
// field's (both "messages" and "to" given, neither given).
func (p *Planner) Conflict(field, detail string) {
	p.fail(-1, field, CodeConflict, detail)
}

// Missing records a missing order-level field.
func (p *Planner) Missing(field, detail string) {
	p.fail(-1, field, CodeRequired, detail)
}

// Finish returns the plan, or a ValidationError listing every problem.
func (p *Planner) Finish() (*Plan, error) {
	if p.count == 0 && len(p.errs) == 0 {
		p.fail(-1, "messages", CodeRequired, "an order needs at least one message")
	}
	if len(p.errs) > 0 {
		return nil, &ValidationError{Errors: p.errs}
	}
	return &p.plan, nil
}

// checkSender enforces sender id rules: an alphanumeric sender of 1–11
// characters (letters, digits, space and . - _ &) with at least one letter,
// or a numeric sender (a short code or an E.164 number, 3–15 digits,
// optionally with a leading +).
func checkSender(from string) error {
	digits, letters, other := 0, 0, 0
	for i, r := range from {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z'):
			letters++
		case r == '+' && i == 0:
		case r == ' ' || r == '.' || r == '-' || r == '_' || r == '&':
			other++
		default:
			return fmt.Errorf("sender %q: only letters, digits, space and . - _ & are allowed", from)
		}
	}
	if letters == 0 {
		if other > 0 || digits < 3 || digits > 15 {
			return fmt.Errorf("numeric sender %q must be 3 to 15 digits", from)
		}
		return nil
	}
	if from[0] == '+' || utf8.RuneCountInString(from) > 11 {
		return fmt.Errorf("alphanumeric sender %q must be 1 to 11 characters", from)
	}
	return nil
}
