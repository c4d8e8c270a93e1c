package provider

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a receipt body's signature:
// "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>".
const SignatureHeader = "X-Sandbox-Signature"

// DefaultSignatureTolerance is how far a signature's timestamp may be from
// now when VerifySignature is given no tolerance.
const DefaultSignatureTolerance = 5 * time.Minute

// SignatureProblem names why a signature was refused.
type SignatureProblem string

// The reasons VerifySignature refuses a signature.
const (
	SignatureMissing   SignatureProblem = "missing"
	SignatureMalformed SignatureProblem = "malformed"
	SignatureStale     SignatureProblem = "stale"
	SignatureMismatch  SignatureProblem = "mismatch"
)

// SignatureError is VerifySignature's refusal. Intake answers every one of
// them the same way (401) and logs Problem, so that a sender cannot learn
// more than "no" while an operator can tell a clock skew from a wrong secret.
type SignatureError struct {
	Problem SignatureProblem
}

// Error names the problem without echoing the header.
func (e *SignatureError) Error() string { return "receipt signature " + string(e.Problem) }

// VerifySignature checks that header signs body with secret and that its
// timestamp lies within tolerance of now (either side, since clocks drift
// both ways); a tolerance of 0 means DefaultSignatureTolerance. The timestamp
// is part of the signed text, which is what makes a captured request useless
// for replay once it is stale. Several v1 values are accepted (a provider
// rotating secrets signs with both); any match is enough.
func VerifySignature(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if header == "" {
		return &SignatureError{Problem: SignatureMissing}
	}
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		key, value, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return &SignatureError{Problem: SignatureMalformed}
		}
		switch key {
		case "t":
			ts = value
		case "v1":
			sig, err := hex.DecodeString(value)
			if err != nil || len(sig) != sha256.Size {
				return &SignatureError{Problem: SignatureMalformed}
			}
			sigs = append(sigs, sig)
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return &SignatureError{Problem: SignatureMalformed}
	}
	if age := now.Sub(time.Unix(unix, 0)); age > tolerance || age < -tolerance {
		return &SignatureError{Problem: SignatureStale}
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(ts))
	mac.Write([]byte("."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range sigs {
		if hmac.Equal(sig, want) {
			return nil
		}
	}
	return &SignatureError{Problem: SignatureMismatch}
}
