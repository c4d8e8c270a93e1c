package domain_test

import (
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
)

func TestWebhookSettingsAreChecked(t *testing.T) {
	ok, err := domain.CheckWebhookSettings(domain.WebhookSettings{URL: "https://example.com/hook"}, false)
	require.NoError(t, err)
	require.ElementsMatch(t, domain.WebhookEventTypes(), ok.EventTypes, "no types: every order and message event")
	require.Len(t, ok.EventTypes, 11)
	require.Contains(t, ok.EventTypes, "MessageRedriven", "a client hears that its failed message went out again")
	two, err := domain.CheckWebhookSettings(domain.WebhookSettings{URL: "https://example.com", EventTypes: []string{"MessageFailed", "MessageDelivered", "MessageFailed"}}, false)
	require.NoError(t, err)
	require.Equal(t, []string{"MessageDelivered", "MessageFailed"}, two.EventTypes)
	_, err = domain.CheckWebhookSettings(domain.WebhookSettings{URL: "http://127.0.0.1:9/x"}, true)
	require.NoError(t, err, "http is allowed when private targets are")
	for _, bad := range []domain.WebhookSettings{
		{URL: ""}, {URL: "http://example.com"}, {URL: "ftp://example.com"}, {URL: "https://"}, {URL: "https://u:p@example.com"},
		{URL: "https://example.com/#x"}, {URL: "example.com"}, {URL: "https://example.com", EventTypes: []string{"APIKeyIssued"}},
		{URL: "https://example.com", EventTypes: []string{"WebhookEndpointCreated"}},
		{URL: "https://example.com", Description: string(make([]byte, 600))},
	} {
		_, err := domain.CheckWebhookSettings(bad, false)
		require.ErrorIs(t, err, domain.ErrInvalidWebhook, "%+v", bad)
	}
}

func TestWebhookLifecycleFolds(t *testing.T) {
	now := time.Now()
	var w domain.Webhook
	require.ErrorIs(t, w.Apply(domain.WebhookEndpointDisabled{Reason: "x", At: now}), domain.ErrIllegalTransition)
	require.NoError(t, w.Apply(domain.WebhookEndpointCreated{WebhookID: "W", AccountID: "A", URL: "https://a", EventTypes: []string{"MessageDelivered"}, At: now}))
	require.True(t, w.Enabled)
	ev, ok := w.Disable("endpoint answered 410 Gone", now)
	require.True(t, ok)
	require.NoError(t, w.Apply(ev))
	require.False(t, w.Enabled)
	require.Equal(t, "endpoint answered 410 Gone", w.DisabledReason)
	_, ok = w.Disable("again", now)
	require.False(t, ok, "a disabled endpoint is not disabled twice")
	require.NoError(t, w.Apply(domain.WebhookEndpointUpdated{URL: "https://b", EventTypes: []string{"MessageFailed"}, Enabled: true, At: now}))
	require.True(t, w.Enabled)
	require.Empty(t, w.DisabledReason, "enabling clears the reason")
	require.NoError(t, w.Apply(domain.WebhookSecretRotated{At: now}))
	require.NoError(t, w.Apply(domain.WebhookEndpointDeleted{At: now}))
	require.Equal(t, 5, w.Version)
	err := w.Apply(domain.WebhookEndpointUpdated{At: now})
	require.True(t, errors.Is(err, domain.ErrIllegalTransition), "nothing follows a delete")
	require.ErrorIs(t, w.Apply(domain.MessageQueued{}), domain.ErrIllegalTransition)
}

func TestWebhookEventsDecode(t *testing.T) {
	for _, e := range []domain.Event{domain.WebhookEndpointCreated{WebhookID: "W", URL: "https://a", EventTypes: []string{"MessageFailed"}},
		domain.WebhookEndpointUpdated{URL: "https://a", Enabled: true}, domain.WebhookSecretRotated{}, domain.WebhookEndpointDisabled{Reason: "r"},
		domain.WebhookEndpointDeleted{}, domain.WebhookReplayRequested{Queued: 3, EventIDs: []string{"e"}}} {
		b, err := domain.Encode(e)
		require.NoError(t, err)
		back, err := domain.Decode(e.EventType(), e.SchemaVersion(), b)
		require.NoError(t, err)
		require.Equal(t, e, back)
	}
}
