package webhooks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"syscall"
)

// ErrForbiddenAddress: the URL's host is, or resolves to, an address a
// callback must not reach (loopback, private, link-local, metadata …).
var ErrForbiddenAddress = errors.New("forbidden callback address")

// blocked are the ranges no callback goes to unless private targets are
// allowed: an endpoint URL is chosen by a client, and without this rule it
// would make afterok probe its own network (SSRF), the cloud metadata
// service first.
var blocked = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
		"169.254.0.0/16", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
		"::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8", "fd00:ec2::254/128",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

var nat64 = netip.MustParsePrefix("64:ff9b::/96")

// CheckAddr refuses an address in a blocked range, in any of its forms
// (IPv4-mapped IPv6 and NAT64 included).
func CheckAddr(a netip.Addr) error {
	a = a.Unmap().WithZone("")
	if nat64.Contains(a) { // the IPv4 address in its last 32 bits is what it reaches
		b := a.As16()
		a = netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	}
	if !a.IsValid() {
		return fmt.Errorf("%w: not an IP address", ErrForbiddenAddress)
	}
	for _, p := range blocked {
		if p.Contains(a) {
			return fmt.Errorf("%w: %s is in %s", ErrForbiddenAddress, a, p)
		}
	}
	return nil
}

// Guard applies the address rules (README, "Status callbacks": https only; no loopback, private, link-local or metadata address): at creation to the
// URL's host and what it resolves to, and at connect time, through the
// dialer's Control, to the address actually dialled, so a name that
// resolves elsewhere later (DNS rebinding) is refused too.
type Guard struct {
	// AllowPrivate turns the rules off (AFTEROK_WEBHOOK_ALLOW_PRIVATE,
	// afterok dev and tests with a local receiver); it allows http too.
	AllowPrivate bool
	// Resolver looks host names up at creation (default net.DefaultResolver).
	Resolver *net.Resolver
}

// CheckURL refuses a URL whose host is or resolves to a blocked address.
func (g Guard) CheckURL(ctx context.Context, raw string) error {
	if g.AllowPrivate {
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenAddress, err)
	}
	host := u.Hostname()
	if a, err := netip.ParseAddr(host); err == nil {
		return CheckAddr(a)
	}
	r := g.Resolver
	if r == nil {
		r = net.DefaultResolver
	}
	addrs, err := r.LookupNetIP(ctx, "ip", host)
	if err != nil || len(addrs) == 0 {
		return fmt.Errorf("%w: %s does not resolve", ErrForbiddenAddress, host)
	}
	for _, a := range addrs {
		if err := CheckAddr(a); err != nil {
			return fmt.Errorf("%s: %w", host, err)
		}
	}
	return nil
}

// Control is a net.Dialer Control func: it refuses to connect to a
// blocked address.
func (g Guard) Control(_, address string, _ syscall.RawConn) error {
	if g.AllowPrivate {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenAddress, err)
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrForbiddenAddress, err)
	}
	return CheckAddr(a)
}
