// Package phone owns destination numbers: what the API accepts as a "to"
// (E.164 only, never guessed from a default region), whether the number can
// exist (per libphonenumber's metadata, github.com/nyaruka/phonenumbers), and
// the region it belongs to, which pricing and routing key on.
//
// Every message of an order (up to 100,000) is parsed here before the order
// is accepted, so Parse is built for throughput: see validate.go for why it
// does not call phonenumbers.Parse. It must never trade correctness for
// that: a number Parse accepts is one libphonenumber considers valid.
//
// Like all of domain/, this package does no I/O.
package phone

// Number is a destination that passed Parse.
type Number struct {
	// E164 is the number as "+" and digits, exactly as it was accepted.
	E164 string `json:"e164"`
	// Region is the ISO 3166-1 alpha-2 code of the number's country, e.g.
	// "DE"; for a shared country code (+1, +44, +7 …) the region the number
	// belongs to, e.g. "CA" for a Canadian +1 number.
	Region string `json:"region"`
	// CountryCode is the ITU calling code, e.g. 49.
	CountryCode int `json:"country_code"`
}

// Stable codes of the errors Parse returns. The API reports them per message
// (validation_failed's errors[].code), so they never change.
const (
	CodeNotE164       = "not_e164"
	CodeInvalidNumber = "invalid_number"
)

// Error is the kind of error Parse returns. Its Code is one of the Code
// constants, for the API to report; errors.Is against ErrNotE164 and
// ErrInvalidNumber tells the kinds apart, and the wrapping error's message
// adds why.
type Error struct {
	code string
	text string
}

// Error returns the kind's message, e.g. "not an E.164 number".
func (e *Error) Error() string { return e.text }

// Code returns the stable code of the kind, e.g. "not_e164".
func (e *Error) Code() string { return e.code }

// The kinds of error Parse returns, always wrapped with the reason.
var (
	// ErrNotE164: the input is not "+" followed by a country code and digits
	// (spaces, dashes, letters, a missing "+", a national "0…" form, more
	// than 15 digits). We never guess a region to repair it, because a
	// wrong guess sends a message to a stranger.
	ErrNotE164 = &Error{code: CodeNotE164, text: "not an E.164 number"}
	// ErrInvalidNumber: the input is E.164 in form but names no number that
	// can exist: an unknown country code, a wrong length or range for its
	// country, or a non-geographic number (+800, +882 …), which has no
	// region to price or route it by.
	ErrInvalidNumber = &Error{code: CodeInvalidNumber, text: "not a valid phone number"}
)

// maxDigits is E.164's limit on country code plus national number.
const maxDigits = 15

// Parse accepts raw if it is an E.164 number that libphonenumber's metadata
// considers valid, and tells its region. Errors wrap ErrNotE164 or
// ErrInvalidNumber.
func Parse(raw string) (Number, error) {
	if err := checkForm(raw); err != nil {
		return Number{}, err
	}
	digits := raw[1:]
	cc, ccLen := countryCode(digits)
	if cc == 0 {
		return Number{}, invalid("unknown country code")
	}
	region, err := validate(cc, digits[ccLen:])
	if err != nil {
		return Number{}, err
	}
	return Number{E164: raw, Region: region, CountryCode: cc}, nil
}

// checkForm enforces the shape of E.164 before any metadata is consulted,
// so that a malformed input costs a few comparisons and its error names the
// shape, not the number.
func checkForm(raw string) error {
	switch {
	case raw == "":
		return notE164("empty")
	case raw[0] != '+':
		return notE164("must start with '+' and the country code")
	case len(raw) == 1:
		return notE164("no digits after '+'")
	case len(raw)-1 > maxDigits:
		return notE164("more than 15 digits")
	case raw[1] == '0':
		// "+0…" is usually a national trunk prefix pasted after a "+".
		return notE164("country codes do not start with 0")
	}
	for i := 1; i < len(raw); i++ {
		if raw[i] < '0' || raw[i] > '9' {
			return notE164("only digits may follow '+'")
		}
	}
	return nil
}

func notE164(reason string) error { return &reasonError{ErrNotE164, reason} }
func invalid(reason string) error { return &reasonError{ErrInvalidNumber, reason} }

// reasonError wraps a kind with the reason, without fmt, because invalid
// numbers in a large order are formatted lazily, if at all.
type reasonError struct {
	kind   *Error
	reason string
}

func (e *reasonError) Error() string { return e.kind.text + ": " + e.reason }
func (e *reasonError) Unwrap() error { return e.kind }
