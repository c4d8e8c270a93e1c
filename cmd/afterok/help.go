package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// commands is every subcommand; helps has the help of each.
var commands = map[string]func(ctx context.Context, env *environment, args []string) error{
	"migrate":      runMigrate,
	"verify":       runVerify,
	"accounts":     runAccounts,
	"keys":         runKeys,
	"replay":       runReplay,
	"redrive":      runRedrive,
	"projections":  runProjections,
	"dev":          runDev,
	"serve":        runServe,
	"bench":        runBench,
	"provider-sim": runProviderSim,
	"version":      runVersion,
}

// help is what `afterok <command> -h` prints (with the command's flags),
// on stdout, exiting 0.
type help struct {
	summary string // one line, for the list of commands
	usage   string // the synopsis after "afterok "
	about   string // what it does, in a paragraph
	example string // a command line that works
}

// helps is kept apart from commands because the commands' flag parsing
// prints it.
var helps = map[string]help{
	"migrate": {summary: "apply the database migrations (safe to re-run)",
		usage: "migrate",
		about: "Creates the database named by DATABASE_URL if it does not exist and applies the embedded migrations\n" +
			"not yet recorded, each in its own transaction. Safe to re-run and to run from several processes at\n" +
			"once (they take turns on an advisory lock); a migration edited after it was applied is refused.",
		example: "DATABASE_URL='postgres://localhost:5432/afterok?sslmode=disable' afterok migrate"},
	"verify": {summary: "recompute every stream's hash chain and check the invariants",
		usage: "verify [--projections] [--json]",
		about: "Recomputes every stream's hash chain, checks that versions are contiguous and folds every aggregate\n" +
			"through the domain (illegal transitions, balances that do not add up, a message settled twice). With\n" +
			"--projections it also compares every read-model row with a fresh fold of its events. Exits 1 naming\n" +
			"each failing stream or row.",
		example: "afterok verify --projections"},
	"accounts": {summary: "accounts create|list|show|credit: open, list, inspect and top up accounts",
		usage: "accounts create --name N --credit AMOUNT [--currency EUR] [--scopes a,b] [--countries DE,FR] [--reason R] [--json]\n" +
			"       afterok accounts list [--limit N] [--cursor C] [--json]\n" +
			"       afterok accounts show <account_id> [--json]\n" +
			"       afterok accounts credit <account_id> --amount AMOUNT --reason R [--idempotency-key K] [--json]",
		about: "create opens an account with its opening credit and issues its first API key (printed once; afterok\n" +
			"stores only its SHA-256). list shows every account with its balance and reserved amount, from the accounts\n" +
			"read model. show prints one account's current balances, its keys and its actions (opening, credits, keys\n" +
			"issued and revoked) with their actors and reasons. credit adds money as a BalanceCredited event; with\n" +
			"--idempotency-key, a retry of the same credit prints the first one again and credits nothing. Every\n" +
			"event they cause names cli:<OS user> as its actor.",
		example: "afterok accounts create --name Acme --credit 100 --json"},
	"keys": {summary: "keys issue|list|revoke: an account's API keys",
		usage: "keys issue --account ID [--scopes a,b] [--reason R] [--json]\n" +
			"       afterok keys list --account ID [--json]\n" +
			"       afterok keys revoke <key_id> [--reason R] [--json]",
		about: "issue prints a new key once (afterok stores only its SHA-256); admin is only given when named. list shows\n" +
			"the account's keys, never a key or its hash. revoke records APIKeyRevoked and sets revoked_at: every\n" +
			"process refuses the key within a second. The events name cli:<OS user> as their actor.",
		example: "afterok keys revoke key_01jd3z6q2m5w8x9y0abcdefghj --reason 'leaked in a ticket'"},
	"replay": {summary: "replay message|order|account <id> [--json]: a history as a timeline",
		usage: "replay message|order|account <id> [--json]",
		about: "Prints a message's or an order's history from the store as a timeline, with the time between steps\n" +
			"and each event's actor; for an account, its own actions (opening, credits, keys issued and revoked).",
		example: "afterok replay message 01JD3Z6Q2M5W8X9Y0ABCDEFGHJ"},
	"projections": {summary: "projections status [--json] | projections rebuild <name>",
		usage: "projections status [--json] | projections rebuild <name>",
		about: "status shows each read model's checkpoint, the head of the store and the lag. rebuild <name> folds a\n" +
			"read model from the first event into tables aside and swaps them in, while the system serves.",
		example: "afterok projections rebuild messages"},
	"dev": {summary: "everything in one process with the provider simulator and a demo account (make run)",
		usage: "dev",
		about: "Runs every role and the provider simulator in one process, with an embedded JetStream unless NATS_URL\n" +
			"is set, opens a demo account (kept in AFTEROK_DATA_DIR) and prints a curl that submits an order.",
		example: "afterok dev"},
	"serve": {summary: "serve --roles api,receipts,relay,scheduler,dispatch,tracker,project",
		usage: "serve [--roles LIST]",
		about: "Runs the chosen roles against external PostgreSQL and NATS, so that several processes share the work.\n" +
			"Roles: api, receipts, relay, scheduler, dispatch, tracker, project, webhooks, sim, or all.",
		example: "NATS_URL=nats://127.0.0.1:4222 afterok serve --roles api,receipts"},
	"bench": {summary: "bench --messages N --order-size K --clients C: load a running afterok, report latency and throughput",
		usage: "bench [--messages N] [--order-size K] [--clients C] [--rate R] [--json]",
		about: "Loads a running afterok: submits N messages in orders of K from C clients, follows the final states\n" +
			"over the public SSE stream and reports accept latency, end-to-end messages/s and the drain time.",
		example: "afterok bench --messages 20000 --order-size 100 --clients 8"},
	"provider-sim": {summary: "run the provider simulator alone (AFTEROK_SIM_ADDR)",
		usage: "provider-sim [--callback URL]",
		about: "Runs the provider simulator (sim-a and sim-b) alone on AFTEROK_SIM_ADDR; it posts signed delivery\n" +
			"receipts to {callback}/v1/receipts/{provider}. It needs no database.",
		example: "AFTEROK_SIM_ADDR=127.0.0.1:8090 afterok provider-sim --callback http://127.0.0.1:8080"},
	"redrive": {summary: "redrive message|order: send failed messages again as a new order",
		usage: "redrive message <message_id> --reason R [--dry-run] [--json]\n" +
			"       afterok redrive order <order_id> --reason R [--failure-codes a,b] [--dry-run] [--json]",
		about: "What POST /v1/messages/{id}/redrive and POST /v1/orders/{id}/redrive do, for the message's own account:\n" +
			"each failed message not yet re-driven is sent again as a new message of a new order (up to 500 a\n" +
			"new order), priced and reserved anew; the original stays failed and records MessageRedriven with\n" +
			"cli:<OS user> as its actor. A message is re-driven at most once. --dry-run only counts.",
		example: "afterok redrive order 01J9ZQ3K5V8X2T5N4R7M1C0B9D --reason 'carrier outage over' --failure-codes undeliverable"},
	"version": {summary: "print the version, the commit it was built from and the Go version",
		usage:   "version [--json]",
		about:   "Prints afterok's module version and the version control information the binary was built with.",
		example: "afterok version --json"},
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "afterok — an event-sourced execution ledger for a messaging API\n\nUsage: afterok <command> [flags]\n\nCommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-13s %s\n", n, helps[n].summary)
	}
	fmt.Fprintln(w, "\nConfiguration comes from the environment (see README.md); `afterok <command> -h` explains a command.")
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// flags is a command's flag set; it prints the command's help itself.
type flags struct {
	*flag.FlagSet
	cmd string // the key in commands
	env *environment
}

// newFlags returns the flag set of the (sub)command name, e.g. "accounts
// create"; it reports errors instead of exiting.
func newFlags(name string, env *environment) *flags {
	fs := flag.NewFlagSet("afterok "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // parseFlags reports, once
	fs.Usage = func() {}
	cmd, _, _ := strings.Cut(name, " ")
	return &flags{FlagSet: fs, cmd: cmd, env: env}
}

// parseFlags parses args, which may mix flags with up to positional
// arguments (in any order: `replay message <id> --json` and `replay
// message --json <id>` alike), and returns those. -h prints the help on
// stdout and returns flag.ErrHelp (exit 0); a bad flag or a stray argument
// prints it on stderr and is a usage error (exit 2).
func parseFlags(fs *flags, args []string, positional ...*string) error {
	var got []string
	for {
		if err := fs.Parse(args); err != nil {
			if err == flag.ErrHelp {
				fs.help(fs.env.stdout)
				return flag.ErrHelp
			}
			fs.help(fs.env.stderr)
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		if fs.NArg() == 0 {
			break
		}
		got = append(got, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(got) != len(positional) {
		fs.help(fs.env.stderr)
		if len(got) > len(positional) {
			return fmt.Errorf("%w: unexpected arguments %s", errUsage, strings.Join(got[len(positional):], " "))
		}
		return fmt.Errorf("%w: missing arguments: afterok %s", errUsage, helps[fs.cmd].usage)
	}
	for i, p := range positional {
		*p = got[i]
	}
	return nil
}

// help prints the command's help with this flag set's flags.
func (fs *flags) help(w io.Writer) {
	printHelp(w, fs.cmd, fs.FlagSet)
}

// printHelp prints a command's help: synopsis, what it does, flags (of fs,
// if any) and an example.
func printHelp(w io.Writer, name string, fs *flag.FlagSet) {
	c := helps[name]
	fmt.Fprintf(w, "Usage: afterok %s\n\n%s\n", c.usage, c.about)
	n := 0
	if fs != nil {
		fs.VisitAll(func(*flag.Flag) { n++ })
	}
	if n > 0 {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(io.Discard)
	} else {
		fmt.Fprintln(w, "\nFlags: none")
	}
	fmt.Fprintf(w, "\nExample:\n  %s\n", c.example)
}
