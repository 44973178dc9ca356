package main

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"
)

// TestEveryCommandAnswersHelp: each command and sub-command prints its usage with its flags as --flag and exits 0;
// a wrong command line is a usage error (exit 2).
func TestEveryCommandAnswersHelp(t *testing.T) {
	var paths [][]string
	for _, c := range all(newRoot()) {
		if c.Name() == "help" || c.Hidden {
			continue
		}
		paths = append(paths, strings.Fields(c.CommandPath())[1:])
	}
	if len(paths) < 18 {
		t.Fatalf("%d commands, want every command and sub-command (at least 18)", len(paths))
	}
	for _, p := range paths {
		for _, h := range []string{"--help", "-h"} {
			var out bytes.Buffer
			err := run(context.Background(), append(append([]string{}, p...), h), &out, &out)
			if err != nil || !strings.Contains(out.String(), "Usage:") {
				t.Errorf("%v %s: %v\n%s", p, h, err, out.String())
			}
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"deploy", "--help"}, &out, &out); err != nil ||
		!strings.Contains(out.String(), "--keep-running") || !strings.Contains(out.String(), "--instance-type string") {
		t.Errorf("deploy --help:\n%s", out.String())
	}
	for _, bad := range [][]string{{"plan", "llama2:7b", "--bogus"}, {"nosuch"}, {"local", "nosuch"}, {"plan"}, {"events"}} {
		if err := run(context.Background(), bad, &out, &out); exitCode(err) != 2 || err == nil {
			t.Errorf("%v: %v (exit %d), want a usage error (exit 2)", bad, err, exitCode(err))
		}
	}
}

// TestCompletion: the completion scripts exist, and a MODEL completes from the catalog.
func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		var out bytes.Buffer
		if err := run(context.Background(), []string{"completion", shell}, &out, &out); err != nil || out.Len() < 500 {
			t.Errorf("completion %s: %v (%d bytes)", shell, err, out.Len())
		}
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"__complete", "deploy", "mis"}, &out, &out); err != nil ||
		!strings.Contains(out.String(), "mistral:7b") {
		t.Errorf("__complete deploy: %v\n%s", err, out.String())
	}
}

// TestPlanSpeed: the plan table shows the estimates; a required speed turns slower placements into rejects with
// the reason; an unknown ranking is refused.
func TestPlanSpeed(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"plan", "llama2:7b", "--min-tokens-per-second", "40"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"EST TOK/S", "$/M TOK", "rejected:", "Fargate       est. 1.9 tok/s < 40 required"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("plan --min-tokens-per-second 40 lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"plan", "llama2:7b", "--optimize", "fastest"}, &out, &out); err == nil ||
		!strings.Contains(err.Error(), "not cost, speed or cost-per-token") {
		t.Errorf("--optimize fastest: %v", err)
	}
}

// TestPlanSeedColumn: under the seed policy the table shows the seed's "memory needed" beside the estimate's need;
// the cost policy does not.
func TestPlanSeedColumn(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"plan", "llama2:13b", "--policy", "seed", "--prefer", "cpu"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(out.String(), "\n")
	head := slices.IndexFunc(lines, func(l string) bool { return strings.HasPrefix(l, "#") })
	if head < 0 || !strings.Contains(strings.Join(strings.Fields(lines[head]), " "), "GPU NEED SEED NEEDS $/HOUR") {
		t.Fatalf("no NEED and SEED NEEDS columns:\n%s", out.String())
	}
	if first := strings.Fields(lines[head+1]); !slices.Contains(first, "12.5") || !slices.Contains(first, "8GB+") {
		t.Errorf("first row %q lacks the estimate's 12.5 GiB and the seed's 8GB+", lines[head+1])
	}
	if !strings.Contains(out.String(), "seed table: memory needed 8GB+ (CPU ml.m5.xlarge, GPU ml.g4dn.xlarge)") {
		t.Errorf("no seed line:\n%s", out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"plan", "llama2:13b"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "SEED NEEDS") {
		t.Errorf("the cost policy shows the seed column:\n%s", out.String())
	}
}
