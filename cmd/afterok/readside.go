package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/afterok/afterok/projections"
)

// The read side's commands: replay a history as a timeline, rebuild a
// projection, show the projections' positions, and the projections half
// of verify. The work is in package projections; this only parses and
// prints.

func runReplay(ctx context.Context, env *environment, args []string) error {
	fs := newFlags("replay", env)
	asJSON := fs.Bool("json", false, "print the timeline as JSON")
	if len(args) == 0 || (args[0] != "message" && args[0] != "order" && args[0] != "account") {
		if len(args) > 0 && isHelp(args[0]) {
			return parseFlags(fs, []string{"-h"})
		}
		fs.help(env.stderr)
		return fmt.Errorf("%w: afterok %s", errUsage, helps["replay"].usage)
	}
	kind, id := args[0], ""
	if err := parseFlags(fs, args[1:], &id); err != nil { // the id is positional: `replay message -h` is help, not an id
		return err
	}
	pool, err := connect(ctx, env, "replay")
	if err != nil {
		return err
	}
	defer pool.Close()
	replay := projections.ReplayMessage
	switch kind {
	case "order":
		replay = projections.ReplayOrder
	case "account":
		replay = projections.ReplayAccount
	}
	steps, err := replay(ctx, pool, projections.AnyAccount(), id)
	if errors.Is(err, projections.ErrNotFound) {
		return fmt.Errorf("no %s %s in the store", kind, id)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		type step struct {
			Position     int64           `json:"position"`
			Stream       string          `json:"stream"`
			Version      int             `json:"version"`
			Type         string          `json:"type"`
			RecordedAt   time.Time       `json:"recorded_at"`
			SinceStartMS int64           `json:"since_start_ms"`
			SincePrevMS  int64           `json:"since_previous_ms"`
			Summary      string          `json:"summary"`
			Actor        string          `json:"actor,omitempty"`
			Data         json.RawMessage `json:"data"`
		}
		out := make([]step, len(steps))
		for i, s := range steps {
			out[i] = step{Position: s.Position, Stream: s.Stream, Version: s.Version, Type: s.Type, RecordedAt: s.RecordedAt,
				SinceStartMS: s.RecordedAt.Sub(steps[0].RecordedAt).Milliseconds(), SincePrevMS: s.SincePrevious.Milliseconds(),
				Summary: s.Summary, Actor: s.Actor, Data: s.Data}
		}
		return json.NewEncoder(env.stdout).Encode(map[string]any{kind + "_id": id, "steps": out})
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RECORDED\t+START\tSTEP\tSTREAM\tV\tEVENT\tACTOR\tDETAILS")
	for _, s := range steps {
		step := "—"
		if s.Version > 1 {
			step = "+" + roundDuration(s.SincePrevious)
		}
		fmt.Fprintf(tw, "%s\t+%s\t%s\t%s\t%d\t%s\t%s\t%s\n", s.RecordedAt.Format("2006-01-02T15:04:05.000Z"),
			roundDuration(s.RecordedAt.Sub(steps[0].RecordedAt)), step, s.Stream, s.Version, s.Type, cmp.Or(s.Actor, "—"), s.Summary)
	}
	return tw.Flush()
}

func roundDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func runProjections(ctx context.Context, env *environment, args []string) error {
	usage := fmt.Errorf("%w: afterok %s  (names: %s)", errUsage, helps["projections"].usage, strings.Join(projections.Names(), ", "))
	status := newFlags("projections status", env)
	asJSON := status.Bool("json", false, "status: print JSON")
	if len(args) == 0 {
		status.help(env.stderr)
		return usage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		return parseFlags(status, []string{"-h"})
	case "status":
		if err := parseFlags(status, args[1:]); err != nil {
			return err
		}
		pool, err := connect(ctx, env, "projections")
		if err != nil {
			return err
		}
		defer pool.Close()
		return printStatus(ctx, env, pool, *asJSON)
	case "rebuild":
		var name string
		if err := parseFlags(newFlags("projections rebuild", env), args[1:], &name); err != nil {
			return err
		}
		if _, err := projections.Lookup(name); err != nil {
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		pool, err := connect(ctx, env, "projections")
		if err != nil {
			return err
		}
		defer pool.Close()
		rep, err := projections.Rebuild(ctx, pool, name, func(p projections.RebuildProgress) {
			fmt.Fprintf(env.stderr, "%s: %-5s %d events (%.0f events/s), position %d of %d, %s\n",
				name, p.Phase, p.Events, p.Rate, p.Position, p.Head, roundDuration(p.Elapsed))
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(env.stdout, "rebuilt %s from position 0: %d events in %s (%.0f events/s); the swap held the live projector %s\n",
			name, rep.Events, roundDuration(rep.Duration), float64(rep.Events)/rep.Duration.Seconds(), roundDuration(rep.SwapPause))
		if rep.Refused > 0 {
			fmt.Fprintf(env.stdout, "%d events could not be folded and were skipped (see afterok verify)\n", rep.Refused)
		}
		return nil
	}
	status.help(env.stderr)
	return usage
}

func printStatus(ctx context.Context, env *environment, pool *pgxpool.Pool, asJSON bool) error {
	st, err := projections.Statuses(ctx, pool, time.Now())
	if err != nil {
		return err
	}
	if asJSON {
		type status struct {
			Name          string    `json:"name"`
			Position      int64     `json:"position"`
			Head          int64     `json:"head"`
			EventsBehind  int64     `json:"events_behind"`
			Capped        bool      `json:"events_behind_capped"`
			SecondsBehind float64   `json:"seconds_behind"`
			UpdatedAt     time.Time `json:"updated_at"`
		}
		out := make([]status, len(st))
		for i, s := range st {
			out[i] = status{Name: s.Name, Position: s.Checkpoint.Position, Head: s.HeadPosition, EventsBehind: s.EventsBehind,
				Capped: s.Capped, SecondsBehind: s.SecondsBehind, UpdatedAt: s.UpdatedAt}
		}
		return json.NewEncoder(env.stdout).Encode(out)
	}
	tw := tabwriter.NewWriter(env.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROJECTION\tPOSITION\tHEAD\tEVENTS BEHIND\tSECONDS BEHIND\tCHECKPOINT MOVED")
	for _, s := range st {
		behind := fmt.Sprint(s.EventsBehind)
		if s.Capped {
			behind = "≥" + behind
		}
		moved := "never"
		if !s.UpdatedAt.IsZero() {
			moved = roundDuration(time.Since(s.UpdatedAt)) + " ago"
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%.3f\t%s\n", s.Name, s.Checkpoint.Position, s.HeadPosition, behind, s.SecondsBehind, moved)
	}
	return tw.Flush()
}

// verifyProjections is verify --projections: every read-model row against
// the events. It reports whether anything differed.
func verifyProjections(ctx context.Context, env *environment, pool *pgxpool.Pool, asJSON bool) (bool, error) {
	start := time.Now()
	rep, err := projections.Verify(ctx, pool, func(table string, rows int) {
		if rows%100_000 == 0 {
			fmt.Fprintf(env.stderr, "verified %d rows of %s…\n", rows, table)
		}
	})
	if err != nil {
		return false, err
	}
	if asJSON {
		diffs := make([]string, len(rep.Differences))
		for i, d := range rep.Differences {
			diffs[i] = d.String()
		}
		_ = json.NewEncoder(env.stdout).Encode(map[string]any{"projections": map[string]any{"rows": rep.Rows,
			"ok": len(diffs) == 0, "differences": diffs}})
		return len(diffs) > 0, nil
	}
	for _, d := range rep.Differences {
		fmt.Fprintln(env.stdout, "FAIL", d)
	}
	fmt.Fprintf(env.stdout, "%d read-model rows verified in %s: ", rep.Rows, roundDuration(time.Since(start)))
	if len(rep.Differences) == 0 {
		fmt.Fprintln(env.stdout, "every row matches the events")
	} else {
		fmt.Fprintf(env.stdout, "%d rows differ from the events (afterok projections rebuild <name> recomputes them)\n", len(rep.Differences))
	}
	return len(rep.Differences) > 0, nil
}
