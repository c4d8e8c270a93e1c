package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/workers/callbacks"
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

// TestConfigReadsTheReplicas: one replica unless AFTEROK_NATS_REPLICAS
// says more, and more than one only with a NATS_URL, because the embedded
// server is a single node and could never place a second replica.
func TestConfigReadsTheReplicas(t *testing.T) {
	env := func(kv map[string]string) func(string) string { return func(k string) string { return kv[k] } }

	c, err := LoadConfig(env(nil))
	require.NoError(t, err)
	require.Equal(t, 1, c.NATSReplicas)

	c, err = LoadConfig(env(map[string]string{"AFTEROK_NATS_REPLICAS": "3", "NATS_URL": "nats://a:4222,nats://b:4222,nats://c:4222"}))
	require.NoError(t, err)
	require.Equal(t, 3, c.NATSReplicas)

	_, err = LoadConfig(env(map[string]string{"AFTEROK_NATS_REPLICAS": "3"}))
	require.ErrorContains(t, err, "needs NATS_URL")
	for _, bad := range []string{"0", "6", "three"} {
		_, err = LoadConfig(env(map[string]string{"AFTEROK_NATS_REPLICAS": bad, "NATS_URL": "nats://a:4222"}))
		require.ErrorContains(t, err, "AFTEROK_NATS_REPLICAS", bad)
	}
}

func TestConfigReadsTheWebhookSettings(t *testing.T) {
	c, err := LoadConfig(func(string) string { return "" })
	require.NoError(t, err)
	require.Equal(t, []time.Duration{5 * time.Second, 5 * time.Minute, 30 * time.Minute, 2 * time.Hour, 5 * time.Hour, 10 * time.Hour, 10 * time.Hour},
		c.WebhookRetrySchedule, "the contract's default schedule")
	require.Equal(t, 120*time.Hour, c.WebhookDisableAfter)
	require.False(t, c.WebhookAllowPrivate)
	env := map[string]string{"AFTEROK_WEBHOOK_RETRY_SCHEDULE": "200ms, 1s,2m", "AFTEROK_WEBHOOK_ALLOW_PRIVATE": "true",
		"AFTEROK_WEBHOOK_DISABLE_AFTER": "1h", "AFTEROK_WEBHOOK_CONCURRENCY": "4"}
	c, err = LoadConfig(func(k string) string { return env[k] })
	require.NoError(t, err)
	require.Equal(t, []time.Duration{200 * time.Millisecond, time.Second, 2 * time.Minute}, c.WebhookRetrySchedule)
	require.True(t, c.WebhookAllowPrivate)
	require.Equal(t, time.Hour, c.WebhookDisableAfter)
	require.Equal(t, 4, c.WebhookConcurrency)
	for _, bad := range []string{"5s,x", "0s", "-1s", ","} {
		_, err := LoadConfig(func(k string) string {
			if k == "AFTEROK_WEBHOOK_RETRY_SCHEDULE" {
				return bad
			}
			return ""
		})
		if bad == "," {
			require.NoError(t, err, "an empty list keeps the default")
			continue
		}
		require.Error(t, err, bad)
	}
}

// TestConfigRefusesAShortWebhookLease: a lease not longer than a callback
// request's timeout is refused, saying why; one just longer is taken.
func TestConfigRefusesAShortWebhookLease(t *testing.T) {
	lease := func(v string) func(string) string {
		return func(k string) string {
			if k == "AFTEROK_WEBHOOK_LEASE" {
				return v
			}
			return ""
		}
	}
	for _, bad := range []string{"500ms", "2s", callbacks.DefaultTimeout.String()} {
		_, err := LoadConfig(lease(bad))
		require.ErrorContains(t, err, "AFTEROK_WEBHOOK_LEASE="+bad, bad)
		require.ErrorContains(t, err, "longer than a callback request's timeout (10s)", bad)
	}
	for _, good := range []string{"11s", "30s"} {
		c, err := LoadConfig(lease(good))
		require.NoError(t, err, good)
		want, _ := time.ParseDuration(good)
		require.Equal(t, want, c.WebhookLease)
	}
	c, err := LoadConfig(lease(""))
	require.NoError(t, err)
	require.Equal(t, 2*time.Minute, c.WebhookLease, "the default")
}
