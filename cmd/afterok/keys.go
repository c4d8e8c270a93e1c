package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/afterok/afterok/handlers/commands/accounts"
)

// `afterok keys issue|list|revoke`: an account's API keys, as the key
// endpoints handle them for the caller's own account, here for any
// account (the operator's), with "cli:<OS user>" as the actor.

var keyCommands = map[string]func(ctx context.Context, env *environment, args []string) error{
	"issue":  runKeysIssue,
	"list":   runKeysList,
	"revoke": runKeysRevoke,
}

func runKeys(ctx context.Context, env *environment, args []string) error {
	if len(args) > 0 {
		if run, ok := keyCommands[args[0]]; ok {
			return run(ctx, env, args[1:])
		}
	}
	fs := newFlags("keys", env)
	if len(args) > 0 && isHelp(args[0]) {
		return parseFlags(fs, []string{"-h"})
	}
	fs.help(env.stderr)
	return fmt.Errorf("%w: afterok %s", errUsage, helps["keys"].usage)
}

func runKeysIssue(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("keys issue", env)
	account := fs.String("account", "", "the account's id (required)")
	scopes := fs.String("scopes", strings.Join(accounts.DefaultScopes, ","), "the key's scopes, comma-separated (admin only when named)")
	reason := fs.String("reason", "", "why, for the account's history (optional)")
	asJSON := fs.Bool("json", false, "print one JSON object: account_id, key_id, api_key, scopes")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *account == "" {
		return fmt.Errorf("%w: --account is required", errUsage)
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	k, err := svc.IssueKey(ctx, *account, splitList(*scopes, false), nil, accounts.Action{Actor: cliActor(), Reason: *reason})
	if errors.Is(err, accounts.ErrUnknownAccount) {
		return fmt.Errorf("no account %s in the store", *account)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(k)
	}
	fmt.Fprintf(env.stdout, "key_id:  %s\napi_key: %s\nscopes:  %s\n\nThe API key is shown once; afterok stores only its hash.\n",
		k.KeyID, k.APIKey, strings.Join(k.Scopes, " "))
	return nil
}

func runKeysList(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("keys list", env)
	account := fs.String("account", "", "the account's id (required)")
	asJSON := fs.Bool("json", false, `print one JSON object: {"keys": [...]}`)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *account == "" {
		return fmt.Errorf("%w: --account is required", errUsage)
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	if _, err := accounts.Load(ctx, pool, *account); errors.Is(err, accounts.ErrUnknownAccount) {
		return fmt.Errorf("no account %s in the store", *account)
	}
	keys, err := svc.ListKeys(ctx, *account)
	if err != nil {
		return err
	}
	if *asJSON {
		if keys == nil {
			keys = []accounts.Key{}
		}
		return json.NewEncoder(env.stdout).Encode(map[string]any{"keys": keys})
	}
	printKeys(env, keys)
	return nil
}

func printKeys(env *environment, keys []accounts.Key) {
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY\tPREFIX\tSCOPES\tCREATED\tLAST USED\tREVOKED")
	when := func(t *time.Time) string {
		if t == nil {
			return "—"
		}
		return t.Format(time.RFC3339)
	}
	for _, k := range keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.KeyID, k.Prefix, strings.Join(k.Scopes, ","),
			k.CreatedAt.Format(time.RFC3339), when(k.LastUsedAt), when(k.RevokedAt))
	}
	_ = tw.Flush()
}

func runKeysRevoke(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("keys revoke", env)
	reason := fs.String("reason", "", "why, for the account's history (optional)")
	asJSON := fs.Bool("json", false, "print one JSON object: account_id, key_id, revoked")
	var keyID string
	if err := parseFlags(fs, args, &keyID); err != nil {
		return err
	}
	svc, pool, err := accountService(ctx, env)
	if err != nil {
		return err
	}
	defer pool.Close()
	account, err := svc.KeyAccount(ctx, keyID)
	if errors.Is(err, accounts.ErrUnknownKey) {
		return fmt.Errorf("no key %s in the store", keyID)
	}
	if err != nil {
		return err
	}
	if err := svc.RevokeKey(ctx, account, keyID, nil, accounts.Action{Actor: cliActor(), Reason: *reason}); err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{"account_id": account, "key_id": keyID, "revoked": true})
	}
	fmt.Fprintf(env.stdout, "revoked %s of account %s: every process refuses it within %s\n", keyID, account, accounts.KeyCacheTTL)
	return nil
}
