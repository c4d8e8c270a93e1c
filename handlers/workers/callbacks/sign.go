package callbacks

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"strconv"
	"strings"
)

// Sign returns the webhook-signature header of a delivery, as the Standard
// Webhooks specification defines it: for each live secret, "v1," and the
// base64 HMAC-SHA256, keyed by the secret's bytes (the base64 after
// "whsec_"), of id "." timestamp "." body; several are space separated
// (while a rotated-out secret still signs). A secret that does not decode
// signs with nothing and is skipped.
func Sign(secrets []string, id string, timestamp int64, body []byte) string {
	sigs := make([]string, 0, len(secrets))
	ts := strconv.FormatInt(timestamp, 10)
	for _, s := range secrets {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, "whsec_"))
		if err != nil || len(key) == 0 {
			continue
		}
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
		m.Write(body)
		sigs = append(sigs, "v1,"+base64.StdEncoding.EncodeToString(m.Sum(nil)))
	}
	return strings.Join(sigs, " ")
}
