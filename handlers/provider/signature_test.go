package provider

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"testing"
	"time"
)

// signed builds a header the way the protocol describes it, independently
// of any signer in the code under test.
func signed(secret, body string, t time.Time) string {
	ts := fmt.Sprint(t.Unix())
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(ts + "." + body))
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac.Sum(nil))
}

func TestVerifySignature(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	body := `{"receipts":[]}`
	good := signed("s3cret", body, now)
	other := signed("0ther", body, now)
	cases := []struct {
		name   string
		header string
		body   string
		now    time.Time
		want   SignatureProblem // "" for valid
	}{
		{"valid", good, body, now, ""},
		{"valid within tolerance", good, body, now.Add(4 * time.Minute), ""},
		{"clock behind the sender", good, body, now.Add(-4 * time.Minute), ""},
		{"rotated secrets, second matches", other + ",v1=" + good[len("t=1750000000,v1="):], body, now, ""},
		{"missing", "", body, now, SignatureMissing},
		{"wrong secret", other, body, now, SignatureMismatch},
		{"tampered body", good, `{"receipts":[{}]}`, now, SignatureMismatch},
		{"stale", good, body, now.Add(6 * time.Minute), SignatureStale},
		{"from the future", good, body, now.Add(-6 * time.Minute), SignatureStale},
		{"timestamp altered", "t=1750000001" + good[len("t=1750000000"):], body, now, SignatureMismatch},
		{"no v1", "t=1750000000", body, now, SignatureMalformed},
		{"no t", good[len("t=1750000000,"):], body, now, SignatureMalformed},
		{"v1 not hex", "t=1750000000,v1=zz", body, now, SignatureMalformed},
		{"v1 short", "t=1750000000,v1=abcd", body, now, SignatureMalformed},
		{"garbage", "hello", body, now, SignatureMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := VerifySignature([]byte("s3cret"), c.header, []byte(c.body), c.now, 0)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused a valid signature: %v", err)
				}
				return
			}
			var se *SignatureError
			if !errors.As(err, &se) || se.Problem != c.want {
				t.Fatalf("got %v, want SignatureError %s", err, c.want)
			}
		})
	}
}

func TestVerifySignatureTolerance(t *testing.T) {
	now := time.Unix(1_750_000_000, 0)
	h := signed("k", "x", now)
	if err := VerifySignature([]byte("k"), h, []byte("x"), now.Add(2*time.Second), time.Second); err == nil {
		t.Fatal("a 2 s old signature passed a 1 s tolerance")
	}
	if err := VerifySignature([]byte("k"), h, []byte("x"), now.Add(time.Second), time.Second); err != nil {
		t.Fatalf("a 1 s old signature failed a 1 s tolerance: %v", err)
	}
}
