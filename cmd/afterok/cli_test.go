package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/afterok/afterok/eventstore/storetest"
)

// syncBuffer is a bytes.Buffer that a running command and the test may use
// at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestProviderSimCommandStartsAndAnswers runs `afterok provider-sim`
// through the real entry point on a free port, asks it for its stats and
// stops it. It used to panic at start: it has no database, and the table
// maintenance of every process ran on its nil pool.
func TestProviderSimCommandStartsAndAnswers(t *testing.T) {
	addr := freeAddr(t)
	t.Setenv("AFTEROK_SIM_ADDR", addr)
	t.Setenv("DATABASE_URL", "postgres://127.0.0.1:1/nothing_here?sslmode=disable") // it must not need one
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- runContext(ctx, []string{"provider-sim", "--callback", "http://" + freeAddr(t)}, &out, &errOut)
	}()
	storetest.Poll(t, 10*time.Second, func() (bool, string) {
		select {
		case code := <-done:
			t.Fatalf("provider-sim exited with %d: %s", code, errOut.String())
		default:
		}
		res, err := http.Get("http://" + addr + "/stats")
		if err != nil {
			return false, err.Error()
		}
		res.Body.Close()
		return res.StatusCode == 200, fmt.Sprint("status ", res.StatusCode)
	})
	cancel()
	select {
	case code := <-done:
		require.Equal(t, 0, code, errOut.String())
	case <-time.After(30 * time.Second):
		t.Fatal("provider-sim did not stop")
	}
}

// TestEveryCommandHasHelp runs `-h` on every command and subcommand
// through the real entry point: each exits 0 and prints, on stdout, its
// synopsis, what it does, its flags and an example of itself. It must not
// touch the database (DATABASE_URL points nowhere).
func TestEveryCommandHasHelp(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://127.0.0.1:1/nothing_here?sslmode=disable&connect_timeout=1")
	cases := []struct {
		args  []string
		flags []string // each as -name in the help
	}{
		{[]string{"migrate"}, nil},
		{[]string{"verify"}, []string{"-projections", "-json"}},
		{[]string{"accounts"}, []string{"-name", "-credit", "-currency", "-scopes", "-countries", "-json"}},
		{[]string{"accounts", "create"}, []string{"-name", "-credit", "-currency", "-scopes", "-countries", "-reason", "-json"}},
		{[]string{"accounts", "list"}, []string{"-limit", "-cursor", "-json"}},
		{[]string{"accounts", "show"}, []string{"-json"}},
		{[]string{"accounts", "credit"}, []string{"-amount", "-reason", "-json"}},
		{[]string{"keys"}, nil},
		{[]string{"keys", "issue"}, []string{"-account", "-scopes", "-reason", "-json"}},
		{[]string{"keys", "list"}, []string{"-account", "-json"}},
		{[]string{"keys", "revoke"}, []string{"-reason", "-json"}},
		{[]string{"replay"}, []string{"-json"}},
		{[]string{"replay", "message"}, []string{"-json"}},
		{[]string{"replay", "order"}, []string{"-json"}},
		{[]string{"replay", "account"}, []string{"-json"}},
		{[]string{"redrive"}, []string{"-reason", "-failure-codes", "-dry-run", "-json"}},
		{[]string{"redrive", "message"}, []string{"-reason", "-failure-codes", "-dry-run", "-json"}},
		{[]string{"redrive", "order"}, []string{"-reason", "-failure-codes", "-dry-run", "-json"}},
		{[]string{"projections"}, []string{"-json"}},
		{[]string{"projections", "status"}, []string{"-json"}},
		{[]string{"projections", "rebuild"}, nil},
		{[]string{"dev"}, nil},
		{[]string{"serve"}, []string{"-roles"}},
		{[]string{"bench"}, []string{"-messages", "-order-size", "-clients", "-rate", "-url", "-key", "-json"}},
		{[]string{"provider-sim"}, []string{"-callback"}},
		{[]string{"version"}, []string{"-json"}},
	}
	covered := map[string]bool{}
	for _, c := range cases {
		name := c.args[0]
		covered[name] = true
		for _, h := range []string{"-h", "--help"} {
			args := append(append([]string{}, c.args...), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				code, out, errOut := afterok(t, args...)
				require.Equal(t, 0, code, "stderr: %s", errOut)
				require.Contains(t, out, "Usage: afterok "+name)
				require.NotEmpty(t, strings.TrimSpace(helps[name].about))
				require.Contains(t, out, helps[name].about)
				require.Regexp(t, `\nExample:\n  .*afterok `+regexp.QuoteMeta(name), out)
				if len(c.flags) == 0 {
					require.Contains(t, out, "Flags: none")
				}
				for _, f := range c.flags {
					require.Regexp(t, `\n  `+regexp.QuoteMeta(f)+`\b`, out, "flag %s", f)
				}
			})
		}
	}
	for name := range commands {
		require.True(t, covered[name], "command %s has no help case here", name)
		require.Contains(t, helps, name)
	}
	require.Len(t, helps, len(commands))
	// `afterok help <command>` is `afterok <command> -h`.
	code, out, _ := afterok(t, "help", "verify")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Usage: afterok verify")
}

// TestReplayHelpIsNotAnID: `replay message -h` used to look up a message
// called "-h"; flags and the id may come in either order.
func TestReplayHelpIsNotAnID(t *testing.T) {
	t.Setenv("DATABASE_URL", "postgres://127.0.0.1:1/nothing_here?sslmode=disable&connect_timeout=1")
	code, out, errOut := afterok(t, "replay", "message", "-h")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "Usage: afterok replay")
	require.NotContains(t, out+errOut, "no message")
	code, _, errOut = afterok(t, "replay", "message")
	require.Equal(t, 2, code, "a missing id is a usage error")
	require.Contains(t, errOut, "missing arguments")
	code, _, errOut = afterok(t, "replay", "message", "a", "b")
	require.Equal(t, 2, code)
	require.Contains(t, errOut, "unexpected arguments b")
}

// TestVersionCommand prints what runtime/debug.ReadBuildInfo knows.
func TestVersionCommand(t *testing.T) {
	bi, ok := debug.ReadBuildInfo()
	require.True(t, ok)
	code, out, errOut := afterok(t, "version")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "afterok "+bi.Main.Version)
	require.Contains(t, out, bi.Main.Path)
	require.Contains(t, out, bi.GoVersion)
	code, out, _ = afterok(t, "version", "--json")
	require.Equal(t, 0, code)
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &v))
	require.Equal(t, bi.Main.Path, v["module"])
	require.Equal(t, bi.Main.Version, v["version"])
	require.Equal(t, bi.GoVersion, v["go_version"])
}
