// Command afterok is the one binary of afterok: it parses flags and the
// environment, builds the connections and starts the roles. It decides
// nothing about messages, money or events; that lives in the packages it
// wires.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/afterok/afterok/handlers/workers/callbacks"
)

// environment is what every command gets: configuration and where to write.
type environment struct {
	cfg    Config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
	// webhookHooks let fault tests stop the webhooks role at chosen points.
	webhookHooks callbacks.Hooks
}

func main() {
	if os.Getenv("GOGC") == "" {
		// The heap stays small (no per-message state is kept in process),
		// so trading some memory for half the collections is cheap CPU on a
		// two-core machine that also runs PostgreSQL.
		debug.SetGCPercent(200)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		if limit, _ := defaultMemoryLimit(os.ReadFile); limit > 0 {
			debug.SetMemoryLimit(limit)
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error caused by how the command was called (exit 2).
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return runContext(ctx, args, stdout, stderr)
}

// runContext is run until ctx ends (a signal in main, the test's cancel in
// tests), returning the exit code.
func runContext(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || isHelp(args[0]) {
		if len(args) > 1 { // afterok help <command>
			return runContext(ctx, []string{args[1], "-h"}, stdout, stderr)
		}
		usage(stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "afterok: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	cfg, err := LoadConfig(os.Getenv)
	if err != nil {
		fmt.Fprintln(stderr, "afterok:", err)
		return 2
	}
	log := newLogger(stderr, cfg)
	err = cmd(ctx, &environment{cfg: cfg, stdout: stdout, stderr: stderr, log: log}, args[1:])
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp): // help was asked for, and printed
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "afterok:", err)
		return 2
	case errors.Is(err, errVerifyFailed):
		return 1
	default:
		fmt.Fprintln(stderr, "afterok:", err)
		return 1
	}
}
