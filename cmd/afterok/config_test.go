package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestConfigReadsTheOutageSettings: the stranded-message check and the
// simulator's receipt retries, which decide how long an outage the system
// rides out, are configuration like the rest, with the defaults the README
// states and a clear error for a value that is not a duration.
func TestConfigReadsTheOutageSettings(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	c, err := LoadConfig(env(nil))
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, c.StrandedAfter)
	require.Equal(t, 15*time.Second, c.StrandedEvery)
	require.Equal(t, 6*time.Hour, c.SimReceiptMaxAge)

	c, err = LoadConfig(env(map[string]string{"AFTEROK_STRANDED_AFTER": "5m",
		"AFTEROK_STRANDED_EVERY": "30s", "AFTEROK_SIM_RECEIPT_MAX_AGE": "24h"}))
	require.NoError(t, err)
	require.Equal(t, 5*time.Minute, c.StrandedAfter)
	require.Equal(t, 30*time.Second, c.StrandedEvery)
	require.Equal(t, 24*time.Hour, c.SimReceiptMaxAge)

	_, err = LoadConfig(env(map[string]string{"AFTEROK_STRANDED_AFTER": "soon"}))
	require.ErrorContains(t, err, "AFTEROK_STRANDED_AFTER")
}
