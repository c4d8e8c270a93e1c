package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/afterok/afterok/eventstore"
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
	pool, err := connectLongReads(ctx, env, "verify")
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
