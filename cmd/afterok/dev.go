package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/afterok/afterok/domain"
	"github.com/afterok/afterok/handlers/commands/accounts"
	"github.com/afterok/afterok/handlers/provider/sim"
	"github.com/afterok/afterok/handlers/workers/dispatch"
)

// runDev is `afterok dev`: every role and the provider simulator in one
// process, NATS embedded unless NATS_URL is set, and a demo account.
func runDev(ctx context.Context, env *environment, args []string) error {
	if err := parseFlags(newFlags("dev", env), args); err != nil {
		return err
	}
	roles, _ := parseRoles("all,sim")
	// A local receiver is the point of dev: callbacks to loopback allowed.
	env.cfg.WebhookAllowPrivate = true
	s, err := start(ctx, env, roles, dispatch.Hooks{})
	if err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		s.close()
		return err
	}
	demo, err := s.demoAccount(ctx)
	if err != nil {
		s.close()
		return err
	}
	s.banner(demo)
	return s.Run(ctx)
}

// runServe is `afterok serve --roles …`.
func runServe(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("serve", env)
	rolesFlag := fs.String("roles", strings.Join(allRoles, ","), "roles to run: "+strings.Join(allRoles, ", ")+", sim, or all")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	roles, err := parseRoles(*rolesFlag)
	if err != nil {
		return err
	}
	s, err := start(ctx, env, roles, dispatch.Hooks{})
	if err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		s.close()
		return err
	}
	env.log.Info("afterok serving", "roles", strings.Join(sortedRoles(roles), ","), "api", s.apiAddr, "simulator", s.simAddr)
	return s.Run(ctx)
}

// runProviderSim is `afterok provider-sim`: the simulator alone.
func runProviderSim(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("provider-sim", env)
	callback := fs.String("callback", "http://"+env.cfg.Addr, "where receipts are posted: {callback}/v1/receipts/{provider}")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	env.cfg.Addr = strings.TrimPrefix(strings.TrimPrefix(*callback, "http://"), "https://")
	s := &system{env: env, cfg: env.cfg, roles: map[string]bool{roleSim: true}}
	if err := s.buildSim(); err != nil {
		return err
	}
	if err := s.listen(); err != nil {
		return err
	}
	env.log.Info("provider simulator serving", "addr", s.simAddr, "receipts_to", *callback)
	return s.Run(ctx)
}

// demoCredentials are kept in the data directory so that every `make run`
// shows the same working key.
type demoCredentials struct {
	AccountID string `json:"account_id"`
	APIKey    string `json:"api_key"`
}

func (s *system) demoAccount(ctx context.Context) (demoCredentials, error) {
	path := filepath.Join(s.cfg.DataDir, "dev-account.json")
	var d demoCredentials
	if b, err := os.ReadFile(path); err == nil && json.Unmarshal(b, &d) == nil {
		if _, err := s.accounts.Authenticate(ctx, d.APIKey); err == nil {
			return d, nil
		}
	}
	c, err := s.accounts.Create(ctx, accounts.NewAccount{Name: "Demo", Credit: domain.Money{AmountMicros: 1_000_000_000, Currency: s.cfg.Prices.Currency()},
		Scopes: accounts.DefaultScopes})
	if err != nil {
		return d, fmt.Errorf("demo account: %w", err)
	}
	d = demoCredentials{AccountID: c.AccountID, APIKey: c.APIKey}
	b, _ := json.MarshalIndent(d, "", "  ")
	if err := os.MkdirAll(s.cfg.DataDir, 0o755); err != nil {
		return d, err
	}
	if err := os.WriteFile(path, b, 0o600); err != nil && !errors.Is(err, os.ErrExist) {
		return d, err
	}
	return d, nil
}

func (s *system) banner(d demoCredentials) {
	api := "http://" + s.apiAddr
	nats := s.cfg.NATSURL
	if s.embedded != nil {
		nats = s.embedded.URL + " (embedded, data in " + filepath.Join(s.cfg.DataDir, "nats") + ")"
	}
	fmt.Fprintf(s.env.stdout, `
afterok dev is up (%s)

  API          %s            OpenAPI  %s/openapi.json   metrics  %s/metrics
  simulator    http://%s     stats    http://%s/stats
  NATS         %s
  demo key     %s   (account %s, 1000 EUR)
  console      %s/console/   (sign in with the demo key)

Submit an order and watch it go from accepted to delivered (…0003 fails over to sim-b):

  KEY=%s
  ORDER=$(curl -s %s/v1/orders -H "Authorization: Bearer $KEY" -H 'Content-Type: application/json' \
      -d '{"to":["%s","%s"],"body":"Hello from afterok"}')
  echo "$ORDER"; sleep 2
  curl -s %s/v1/orders/$(echo "$ORDER" | sed -E 's/.*"order_id":"([^"]+)".*/\1/') -H "Authorization: Bearer $KEY"
  curl -s %s/v1/messages/$(echo "$ORDER" | sed -E 's/.*"messages":\[\{"message_id":"([^"]+)".*/\1/') -H "Authorization: Bearer $KEY"

Test numbers (last four digits): 0001 undeliverable, 0002 rejected, 0003 failover, 0004 no receipt (expires), 0005 early receipt.
Ctrl-C stops it.
`, time.Now().Format(time.RFC3339), api, api, api, s.simAddr, s.simAddr, nats, d.APIKey, d.AccountID, api,
		d.APIKey, api, sim.ExampleDelivered, sim.ExampleFailover, api, api)
}
