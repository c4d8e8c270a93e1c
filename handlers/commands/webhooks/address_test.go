package webhooks_test

import (
	"context"
	"net/netip"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/handlers/commands/webhooks"
)

func TestAddressRules(t *testing.T) {
	for _, bad := range []string{"127.0.0.1", "127.8.9.1", "10.1.2.3", "172.16.0.1", "172.31.255.255", "192.168.1.1", "100.64.0.1",
		"169.254.169.254", "0.0.0.0", "::1", "::", "fd00:ec2::254", "fc00::1", "fe80::1", "::ffff:127.0.0.1", "::ffff:169.254.169.254",
		"::ffff:10.0.0.1", "64:ff9b::7f00:1", "224.0.0.1"} {
		require.ErrorIs(t, webhooks.CheckAddr(netip.MustParseAddr(bad)), webhooks.ErrForbiddenAddress, bad)
	}
	for _, good := range []string{"93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1", "::ffff:8.8.8.8"} {
		require.NoError(t, webhooks.CheckAddr(netip.MustParseAddr(good)), good)
	}
	g := webhooks.Guard{}
	ctx := context.Background()
	for _, bad := range []string{"https://127.0.0.1/x", "https://[::1]:8443/", "https://169.254.169.254/latest/meta-data", "https://localhost:9/",
		"https://[::ffff:7f00:1]/", "https://0.0.0.0/"} {
		require.ErrorIs(t, g.CheckURL(ctx, bad), webhooks.ErrForbiddenAddress, bad)
	}
	require.NoError(t, g.CheckURL(ctx, "https://93.184.216.34/hook"))
	require.NoError(t, webhooks.Guard{AllowPrivate: true}.CheckURL(ctx, "https://127.0.0.1/x"))
	require.ErrorIs(t, g.Control("tcp4", "127.0.0.1:443", nil), webhooks.ErrForbiddenAddress)
	require.ErrorIs(t, g.Control("tcp6", "[::ffff:127.0.0.1]:443", nil), webhooks.ErrForbiddenAddress)
	require.NoError(t, g.Control("tcp4", "93.184.216.34:443", nil))
	require.NoError(t, webhooks.Guard{AllowPrivate: true}.Control("tcp4", "127.0.0.1:443", nil))
}
