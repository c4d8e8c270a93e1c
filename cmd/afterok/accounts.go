package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/projections"
)

// The operator's account and key commands. They work on the database
// directly, as the API's admin and key endpoints do through the same
// service (handlers/commands/accounts), and record "cli:<OS user>" as the
// actor of every event they cause.

// cliActor is who the command line acts as.
func cliActor() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli"
}

var accountCommands = map[string]func(ctx context.Context, env *environment, args []string) error{
	"create": runAccountsCreate,
	"list":   runAccountsList,
	"show":   runAccountsShow,
	"credit": runAccountsCredit,
}

func runAccounts(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		if run, ok := accountCommands[args[0]]; ok {
			return run(ctx, env, args[1:])
		}
	}
	fs, _ := createFlags(env)
	if len(args) > 0 && isHelp(args[0]) {
		return parseFlags(fs, []string{"-h"})
	}
	fs.help(env.stderr)
	return fmt.Errorf("%w: afterok %s", errUsage, helps["accounts"].usage)
}

type createOptions struct {
	name, credit, currency, scopes, countries, reason *string
	asJSON                                            *bool
}

func createFlags(env *environment) (*flags, createOptions) {
	fs := newFlags("accounts create", env)
	return fs, createOptions{
		name:      fs.String("name", "", "the account's name (required)"),
		credit:    fs.String("credit", "", "opening credit in currency units, e.g. 100 or 12.50 (required)"),
		currency:  fs.String("currency", env.cfg.Prices.Currency(), "ISO 4217 currency of the account (one the price table serves)"),
		scopes:    fs.String("scopes", strings.Join(accounts.DefaultScopes, ","), "scopes of the first API key"),
		countries: fs.String("countries", "", "allowed destination countries (ISO alpha-2, comma-separated); empty = all"),
		reason:    fs.String("reason", "", "why, for the account's history (optional)"),
		asJSON:    fs.Bool("json", false, "print exactly one JSON object"),
	}
}

func runAccountsCreate(ctx context.Context, env *environment, args []string) error {
	fs, o := createFlags(env)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *o.name == "" || *o.credit == "" {
		return fmt.Errorf("%w: --name and --credit are required", errUsage)
	}
	amount, err := domain.ParseAmount(*o.credit, strings.ToUpper(*o.currency))
	if err != nil {
		return fmt.Errorf("%w: --credit: %v", errUsage, err)
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	created, err := svc.Create(ctx, accounts.NewAccount{Name: *o.name, Credit: amount,
		Scopes: splitList(*o.scopes, false), AllowedCountries: splitList(*o.countries, true),
		Action: accounts.Action{Actor: cliActor(), Reason: *o.reason}})
	if err != nil {
		return err
	}
	if *o.asJSON {
		return json.NewEncoder(env.stdout).Encode(created)
	}
	fmt.Fprintf(env.stdout, "account_id: %s\napi_key:    %s\nscopes:     %s\nbalance:    %s\n\nThe API key is shown once; afterok stores only its hash.\n",
		created.AccountID, created.APIKey, strings.Join(created.Scopes, " "), created.Balance)
	return nil
}

func accountService(ctx context.Context, env *environment) (*accounts.Service, *pgxpool.Pool, error) {
	pool, err := connect(ctx, env, "accounts")
	if err != nil {
		return nil, nil, err
	}
	return accounts.New(eventstore.New(pool), time.Now, accounts.Currencies(env.cfg.Prices.Currency()),
		accounts.IdempotencyTTL(env.cfg.IdempotencyTTL)), pool, nil
}

// accountJSON is an account as --json prints it, the API's shape.
type accountJSON struct {
	AccountID string       `json:"account_id"`
	Name      string       `json:"name"`
	Currency  string       `json:"currency"`
	Balance   domain.Money `json:"balance"`
	Reserved  domain.Money `json:"reserved"`
	Credited  domain.Money `json:"credited"`
	Spent     domain.Money `json:"spent"`
	Refunded  domain.Money `json:"refunded"`
	OpenedAt  time.Time    `json:"opened_at"`
}

func accountOf(a projections.Account) accountJSON {
	m := func(micros int64) domain.Money { return domain.Money{AmountMicros: micros, Currency: a.Currency} }
	return accountJSON{AccountID: a.ID, Name: a.Name, Currency: a.Currency, Balance: m(a.Balance), Reserved: m(a.Reserved),
		Credited: m(a.Credited), Spent: m(a.Spent), Refunded: m(a.Refunded), OpenedAt: a.OpenedAt}
}

func runAccountsList(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("accounts list", env)
	limit := fs.Int("limit", 100, "accounts per page (1 to 1000)")
	cursor := fs.String("cursor", "", "next_cursor of the previous page")
	asJSON := fs.Bool("json", false, "print one JSON object: accounts and next_cursor")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *limit < 1 || *limit > 1000 {
		return fmt.Errorf("%w: --limit must be from 1 to 1000", errUsage)
	}
	pool, err := connect(ctx, env, "accounts")
	if err != nil {
		return err
	}
	defer pool.Close()
	page, err := projections.ListAccounts(ctx, pool, *limit, *cursor)
	if errors.Is(err, projections.ErrInvalidQuery) {
		return fmt.Errorf("%w: --cursor: %v", errUsage, err)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		out := struct {
			Accounts   []accountJSON `json:"accounts"`
			NextCursor *string       `json:"next_cursor"`
		}{Accounts: []accountJSON{}}
		for _, a := range page.Accounts {
			out.Accounts = append(out.Accounts, accountOf(a))
		}
		if page.Next != "" {
			out.NextCursor = &page.Next
		}
		return json.NewEncoder(env.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tNAME\tBALANCE\tRESERVED\tOPENED")
	for _, a := range page.Accounts {
		v := accountOf(a)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", v.AccountID, v.Name, v.Balance, v.Reserved, v.OpenedAt.Format(time.RFC3339))
	}
	if page.Next != "" {
		fmt.Fprintf(tw, "\nmore: --cursor %s\n", page.Next)
	}
	return tw.Flush()
}

func runAccountsShow(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("accounts show", env)
	asJSON := fs.Bool("json", false, "print one JSON object: the account, its keys and its actions")
	var id string
	if err := parseFlags(fs, args, &id); err != nil {
		return err
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	a, err := accounts.Load(ctx, pool, id)
	if errors.Is(err, accounts.ErrUnknownAccount) {
		return fmt.Errorf("no account %s in the store", id)
	}
	if err != nil {
		return err
	}
	keys, err := svc.ListKeys(ctx, id)
	if err != nil {
		return err
	}
	steps, err := projections.ReplayAccount(ctx, pool, projections.AnyAccount(), id)
	if err != nil {
		return err
	}
	m := func(micros int64) domain.Money { return domain.Money{AmountMicros: micros, Currency: a.Currency} }
	if *asJSON {
		type action struct {
			RecordedAt time.Time       `json:"recorded_at"`
			Type       string          `json:"type"`
			Actor      string          `json:"actor"`
			Summary    string          `json:"summary"`
			Data       json.RawMessage `json:"data"`
		}
		acts := make([]action, len(steps))
		for i, s := range steps {
			acts[i] = action{RecordedAt: s.RecordedAt, Type: s.Type, Actor: s.Actor, Summary: s.Summary, Data: s.Data}
		}
		return json.NewEncoder(env.stdout).Encode(map[string]any{"account_id": a.ID, "name": a.Name, "currency": a.Currency,
			"allowed_countries": a.AllowedCountries, "balance": m(a.Balance), "reserved": m(a.Reserved), "opened_at": a.OpenedAt,
			"keys": keys, "actions": acts})
	}
	countries := "all"
	if len(a.AllowedCountries) > 0 {
		countries = strings.Join(a.AllowedCountries, ",")
	}
	fmt.Fprintf(env.stdout, "account_id: %s\nname:       %s\nbalance:    %s\nreserved:   %s\ncountries:  %s\nopened_at:  %s\n\n",
		a.ID, a.Name, m(a.Balance), m(a.Reserved), countries, a.OpenedAt.UTC().Format(time.RFC3339))
	printKeys(env, keys)
	fmt.Fprintln(env.stdout)
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORDED\tEVENT\tACTOR\tDETAILS")
	for _, s := range steps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", s.RecordedAt.Format("2006-01-02T15:04:05.000Z"), s.Type, s.Actor, s.Summary)
	}
	return tw.Flush()
}

func runAccountsCredit(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("accounts credit", env)
	amount := fs.String("amount", "", "how much, in currency units of the account, e.g. 100 or 12.50 (required)")
	reason := fs.String("reason", "", "why, for the account's history (required)")
	key := fs.String("idempotency-key", "", "credit at most once under this key: a retry with the same key, amount and reason\n"+
		"prints the first credit again and moves no money (keys are kept AFTEROK_IDEMPOTENCY_TTL)")
	asJSON := fs.Bool("json", false, "print one JSON object: the credit and the balances after it")
	var id string
	if err := parseFlags(fs, args, &id); err != nil {
		return err
	}
	if *amount == "" || strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --amount and --reason are required", errUsage)
	}
	emptyKey := false
	fs.Visit(func(f *flag.Flag) { emptyKey = emptyKey || (f.Name == "idempotency-key" && *key == "") })
	if emptyKey { // the operator believes the retry is safe: it would not be
		return fmt.Errorf("%w: --idempotency-key: empty", errUsage)
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	a, err := accounts.Load(ctx, pool, id)
	if errors.Is(err, accounts.ErrUnknownAccount) {
		return fmt.Errorf("no account %s in the store", id)
	}
	if err != nil {
		return err
	}
	money, err := domain.ParseAmount(*amount, a.Currency)
	if err != nil {
		return fmt.Errorf("%w: --amount: %v", errUsage, err)
	}
	res, err := svc.CreditOnce(ctx, accounts.CreditRequest{AccountID: id, AmountMicros: money.AmountMicros,
		Action: accounts.Action{Actor: cliActor(), Reason: *reason}, IdempotencyKey: *key, KeyScope: accounts.OperatorKeyScope})
	if errors.Is(err, accounts.ErrIdempotencyConflict) {
		return fmt.Errorf("--idempotency-key %s was used for another credit; nothing was credited", *key)
	}
	if err != nil {
		return err
	}
	c := res.Credited
	if res.Replayed {
		fmt.Fprintf(env.stderr, "already credited under --idempotency-key %s: nothing was credited now; the first credit's answer follows\n", *key)
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(c)
	}
	fmt.Fprintf(env.stdout, "credited %s to %s (%s)\nbalance:  %s\nreserved: %s\n", c.Credited, id, c.Reason, c.Balance, c.Reserved)
	return nil
}
