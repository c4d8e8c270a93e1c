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
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, env *environment, args []string) error
}

// environment is what every command gets: configuration and where to write.
type environment struct {
	cfg    Config
	stdout io.Writer
	stderr io.Writer
	log    *slog.Logger
}

var commands = map[string]command{
	"migrate":      {"apply the database migrations (safe to re-run)", runMigrate},
	"verify":       {"recompute every stream's hash chain and check the invariants", runVerify},
	"accounts":     {"accounts create --name N --credit AMOUNT [--currency EUR] [--json]", runAccounts},
	"replay":       {"replay message|order <id> [--json]: a history as a timeline", runReplay},
	"projections":  {"projections status [--json] | projections rebuild <name>", runProjections},
	"dev":          {"everything in one process with the provider simulator and a demo account (make run)", runDev},
	"serve":        {"serve --roles api,receipts,relay,scheduler,dispatch,tracker,project", runServe},
	"bench":        {"bench --messages N --order-size K --clients C: load a running afterok, report latency and throughput", runBench},
	"provider-sim": {"run the provider simulator alone (AFTEROK_SIM_ADDR)", runProviderSim},
}

func main() {
	if os.Getenv("GOGC") == "" {
		// The heap stays small (no per-message state is kept in process),
		// so trading some memory for half the collections is cheap CPU on a
		// two-core machine that also runs PostgreSQL.
		debug.SetGCPercent(200)
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
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
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
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel}))
	err = cmd.run(ctx, &environment{cfg: cfg, stdout: stdout, stderr: stderr, log: log}, args[1:])
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stderr, "afterok:", err)
		}
		return 2
	case errors.Is(err, errVerifyFailed):
		return 1
	default:
		fmt.Fprintln(stderr, "afterok:", err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "afterok — an event-sourced execution ledger for a messaging API\n\nUsage: afterok <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nConfiguration comes from the environment (see README.md); `afterok <command> -h` lists a command's flags.")
}

// newFlags returns a flag set that reports errors instead of exiting.
func newFlags(name string, env *environment) *flag.FlagSet {
	fs := flag.NewFlagSet("afterok "+name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	return fs
}

// parseFlags parses and rejects stray positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %s", errUsage, strings.Join(fs.Args(), " "))
	}
	return nil
}
