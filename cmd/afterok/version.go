package main

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime/debug"
)

// buildVersion is what the binary knows of its own build: the module
// version (a tag when installed with `go install …@v1.2.3`, "(devel)" when
// built from a checkout) and the version control settings Go stamps in.
type buildVersion struct {
	Module    string `json:"module"`
	Version   string `json:"version"`
	Revision  string `json:"vcs_revision,omitempty"`
	Time      string `json:"vcs_time,omitempty"`
	Modified  bool   `json:"vcs_modified,omitempty"`
	GoVersion string `json:"go_version"`
}

func readBuildVersion() buildVersion {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return buildVersion{Module: "github.com/afterok/afterok", Version: "unknown"}
	}
	v := buildVersion{Module: bi.Main.Path, Version: bi.Main.Version, GoVersion: bi.GoVersion}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			v.Revision = s.Value
		case "vcs.time":
			v.Time = s.Value
		case "vcs.modified":
			v.Modified = s.Value == "true"
		}
	}
	return v
}

// runVersion is `afterok version`.
func runVersion(_ context.Context, env *environment, args []string) error {
	fs := newFlags("version", env)
	asJSON := fs.Bool("json", false, "print one JSON object")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	v := readBuildVersion()
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(v)
	}
	fmt.Fprintf(env.stdout, "afterok %s (%s", v.Version, v.Module)
	if v.Revision != "" {
		fmt.Fprintf(env.stdout, ", commit %s", v.Revision)
		if v.Time != "" {
			fmt.Fprintf(env.stdout, " of %s", v.Time)
		}
		if v.Modified {
			fmt.Fprint(env.stdout, ", modified")
		}
	}
	fmt.Fprintf(env.stdout, ") %s\n", v.GoVersion)
	return nil
}
