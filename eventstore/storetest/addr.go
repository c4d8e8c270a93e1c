package storetest

import (
	"net"
	"strconv"
	"testing"
)

func splitHostPort(t testing.TB, addr string) (string, int) {
	t.Helper()
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("storetest: address %q: %v", addr, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("storetest: port %q: %v", p, err)
	}
	return h, port
}
