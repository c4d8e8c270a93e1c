package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
)

func runMigrate(ctx context.Context, env *environment, args []string) error {
	if err := parseFlags(newFlags("migrate", env), args); err != nil {
		return err
	}
	pool, err := connect(ctx, env, "migrate")
	if err != nil {
		return err
	}
	defer pool.Close()
	fmt.Fprintln(env.stdout, "migrations applied")
	return nil
}

var errVerifyFailed = errors.New("verification failed")

func runVerify(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("verify", env)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	withProjections := fs.Bool("projections", false, "also recompute every read model from the events and report rows that differ")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	pool, err := connect(ctx, env, "verify")
	if err != nil {
		return err
	}
	defer pool.Close()
	start := time.Now()
	rep, err := eventstore.Verify(ctx, pool, func(streams, events int) {
		fmt.Fprintf(env.stderr, "verified %d streams, %d events…\n", streams, events)
	})
	if err != nil {
		return err
	}
	if *asJSON {
		failed := rep.FailedStreams()
		if failed == nil {
			failed = []string{}
		}
		problems := make([]string, len(rep.Problems))
		for i, p := range rep.Problems {
			problems[i] = p.String()
		}
		_ = json.NewEncoder(env.stdout).Encode(map[string]any{"streams": rep.Streams, "events": rep.Events,
			"ok": len(rep.Problems) == 0, "failed_streams": failed, "problems": problems})
	} else {
		for _, p := range rep.Problems {
			fmt.Fprintln(env.stdout, "FAIL", p)
		}
		fmt.Fprintf(env.stdout, "%d streams, %d events verified in %s: ", rep.Streams, rep.Events, time.Since(start).Round(time.Millisecond))
		if len(rep.Problems) == 0 {
			fmt.Fprintln(env.stdout, "all hash chains intact, versions contiguous, invariants hold")
		} else {
			fmt.Fprintf(env.stdout, "%d problems in %d streams: %s\n", len(rep.Problems), len(rep.FailedStreams()), strings.Join(rep.FailedStreams(), ", "))
		}
	}
	projectionsDiffer := false
	if *withProjections {
		if projectionsDiffer, err = verifyProjections(ctx, env, pool, *asJSON); err != nil {
			return err
		}
	}
	if len(rep.Problems) > 0 || projectionsDiffer {
		return errVerifyFailed
	}
	return nil
}

func runAccounts(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("accounts create", env)
	name := fs.String("name", "", "the account's name (required)")
	credit := fs.String("credit", "", "opening credit in currency units, e.g. 100 or 12.50 (required)")
	currency := fs.String("currency", env.cfg.Prices.Currency(), "ISO 4217 currency of the account (one the price table serves)")
	scopes := fs.String("scopes", strings.Join(accounts.DefaultScopes, ","), "scopes of the first API key")
	countries := fs.String("countries", "", "allowed destination countries (ISO alpha-2, comma-separated); empty = all")
	asJSON := fs.Bool("json", false, "print exactly one JSON object")
	if len(args) == 0 || args[0] != "create" {
		if len(args) > 0 && isHelp(args[0]) {
			return parseFlags(fs, []string{"-h"})
		}
		fs.help(env.stderr)
		return fmt.Errorf("%w: afterok %s", errUsage, helps["accounts"].usage)
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if *name == "" || *credit == "" {
		return fmt.Errorf("%w: --name and --credit are required", errUsage)
	}
	amount, err := domain.ParseAmount(*credit, strings.ToUpper(*currency))
	if err != nil {
		return fmt.Errorf("%w: --credit: %v", errUsage, err)
	}
	pool, err := connect(ctx, env, "accounts")
	if err != nil {
		return err
	}
	defer pool.Close()
	svc := accounts.New(eventstore.New(pool), time.Now, accounts.Currencies(env.cfg.Prices.Currency()))
	created, err := svc.Create(ctx, accounts.NewAccount{Name: *name, Credit: amount,
		Scopes: splitList(*scopes, false), AllowedCountries: splitList(*countries, true)})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(created)
	}
	fmt.Fprintf(env.stdout, "account_id: %s\napi_key:    %s\nscopes:     %s\nbalance:    %s\n\nThe API key is shown once; afterok stores only its hash.\n",
		created.AccountID, created.APIKey, strings.Join(created.Scopes, " "), created.Balance)
	return nil
}

func splitList(s string, upper bool) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			if upper {
				p = strings.ToUpper(p)
			}
			out = append(out, p)
		}
	}
	return out
}
