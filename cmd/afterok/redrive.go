package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/domain/accept"
	"github.com/afterok/afterok/eventstore"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/commands/orders"
)

// `afterok redrive message|order <id> --reason R`: the operator's re-drive,
// as POST /v1/messages/{id}/redrive and POST /v1/orders/{id}/redrive do it
// for the message's own account, with cli:<OS user> as the actor.

func runRedrive(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("redrive", env)
	reason := fs.String("reason", "", "why, recorded in MessageRedriven (required)")
	codes := fs.String("failure-codes", "", "only messages that failed with one of these codes, comma-separated (e.g. undeliverable,expired)")
	dry := fs.Bool("dry-run", false, "count what would be re-driven and write nothing")
	asJSON := fs.Bool("json", false, "print one JSON object, the API's answer")
	if len(args) == 0 || (args[0] != "message" && args[0] != "order") {
		if len(args) > 0 && isHelp(args[0]) {
			return parseFlags(fs, []string{"-h"})
		}
		fs.help(env.stderr)
		return fmt.Errorf("%w: afterok %s", errUsage, helps["redrive"].usage)
	}
	kind := args[0]
	var id string
	if err := parseFlags(fs, args[1:], &id); err != nil {
		return err
	}
	if strings.TrimSpace(*reason) == "" {
		return fmt.Errorf("%w: --reason is required", errUsage)
	}
	pool, err := connect(ctx, env, "redrive")
	if err != nil {
		return err
	}
	defer pool.Close()
	store := eventstore.New(pool)
	stream := domain.MessageStream(id)
	if kind == "order" {
		stream = domain.OrderStream(id)
	}
	recs, err := store.ReadStream(ctx, stream, 1)
	if err != nil {
		return err
	}
	if len(recs) == 0 {
		return fmt.Errorf("no %s %s in the store", kind, id)
	}
	account := recs[0].AccountID
	svc := accounts.New(store, time.Now, accounts.Currencies(env.cfg.Prices.Currency()))
	view, err := svc.Policy(ctx, account)
	if err != nil {
		return err
	}
	acceptor := orders.New(store, time.Now, orders.Config{IdempotencyTTL: env.cfg.IdempotencyTTL, Logger: env.log})
	defer acceptor.Close()
	policy := accept.DefaultPolicy()
	policy.MaxMessages, policy.Prices = env.cfg.MaxMessages, env.cfg.Prices
	req := orders.RedriveRequest{Principal: accounts.Principal{AccountID: account, KeyID: cliActor()}, Account: view,
		Reason: *reason, FailureCodes: splitList(*codes, false), DryRun: *dry}
	redriver := orders.NewRedriver(store, acceptor, policy)
	var res orders.RedriveResult
	if kind == "order" {
		res, err = redriver.Order(ctx, req, id)
	} else {
		res, err = redriver.Message(ctx, req, id)
	}
	if err != nil {
		return err
	}
	return printRedrive(env, res, *dry, *asJSON, view.Currency)
}

// redriveJSON is the API's answer (handlers/edge/api/redrive.go) as the
// CLI prints it.
type redriveJSON struct {
	Redriven        int            `json:"redriven"`
	OrderID         string         `json:"order_id"`
	OrderIDs        []string       `json:"order_ids"`
	Price           domain.Money   `json:"price"`
	Messages        []redrivenJSON `json:"messages"`
	AlreadyRedriven int            `json:"already_redriven"`
	NotRedrivable   int            `json:"not_redrivable"`
}

type redrivenJSON struct {
	MessageID string `json:"message_id"`
	RedriveOf string `json:"redrive_of"`
	To        string `json:"to"`
}

func printRedrive(env *environment, res orders.RedriveResult, dry, asJSON bool, currency string) error {
	if dry {
		if asJSON {
			return json.NewEncoder(env.stdout).Encode(map[string]int{"redrivable": res.Redrivable,
				"already_redriven": res.AlreadyRedriven, "not_redrivable": res.NotRedrivable})
		}
		fmt.Fprintf(env.stdout, "%d message(s) would be re-driven (%d re-driven before, %d not failed or of another code); nothing written\n",
			res.Redrivable, res.AlreadyRedriven, res.NotRedrivable)
		return nil
	}
	out := redriveJSON{Redriven: res.Redrivable, OrderIDs: []string{}, Messages: []redrivenJSON{}, Price: domain.Zero(currency),
		AlreadyRedriven: res.AlreadyRedriven, NotRedrivable: res.NotRedrivable}
	for _, acc := range res.Orders {
		out.OrderIDs = append(out.OrderIDs, acc.OrderID)
		out.Price.AmountMicros += acc.Price.AmountMicros
		for _, m := range acc.Messages {
			out.Messages = append(out.Messages, redrivenJSON{MessageID: m.ID, RedriveOf: m.RedriveOf, To: m.To})
		}
	}
	if len(out.OrderIDs) > 0 {
		out.OrderID = out.OrderIDs[0]
	}
	if asJSON {
		return json.NewEncoder(env.stdout).Encode(out)
	}
	fmt.Fprintf(env.stdout, "re-drove %d message(s) as order(s) %s, priced %s\n", out.Redriven, strings.Join(out.OrderIDs, ", "), out.Price)
	for _, m := range out.Messages {
		fmt.Fprintf(env.stdout, "  %s  re-drive of %s  to %s\n", m.MessageID, m.RedriveOf, m.To)
	}
	return nil
}
