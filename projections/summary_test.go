package projections_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/projections"
)

// TestSummaryNamesTheCancelAndTheSchedule: afterok replay shows who
// canceled a message and why, and when a scheduled one was to go out.
func TestSummaryNamesTheCancelAndTheSchedule(t *testing.T) {
	require.Equal(t, `attempt=1 by=key-7 reason="campaign called off"`,
		projections.Summarize(domain.MessageCanceled{Attempt: 1, Actor: "key-7", Reason: "campaign called off", At: time.Now()}))
	at := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	require.Contains(t, projections.Summarize(domain.MessageAccepted{To: "+4915112345678", SendAt: at, ExpiresAt: at.Add(time.Hour)}),
		"send_at=2026-03-01T09:00:00Z")
	require.NotContains(t, projections.Summarize(domain.MessageAccepted{To: "+4915112345678"}), "send_at")
	require.Contains(t, projections.Summarize(domain.OrderCompleted{Counts: domain.OrderCounts{Canceled: 3}}), "canceled=3")
	require.NotContains(t, projections.Summarize(domain.OrderCompleted{Counts: domain.OrderCounts{Delivered: 3}}), "canceled")
}
