package main

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/planner"
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

// TestPlanAnyModel: plan sizes a model the catalog does not list from its registry's manifest and GGUF header; a
// name the registry does not have is unknown, naming the registry; a registry that cannot be reached says so.
func TestPlanAnyModel(t *testing.T) {
	reg, err := localreg.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	tiny, err := tinymodel.Bytes(tinymodel.Options{BlockCount: 4, ContextLength: 8192})
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Push(context.Background(), "library/qwen-tiny", "0.1b", []localreg.Layer{{MediaType: registry.MediaModel, Data: tiny}}, nil); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"plan", "qwen-tiny:0.1b", "--registry", reg.Host, "--output", "json"}, &out, &out); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	var p planner.Plan
	if err := json.Unmarshal(out.Bytes(), &p); err != nil {
		t.Fatal(err)
	}
	if p.Model != reg.Host+"/library/qwen-tiny:0.1b" || p.Estimate.WeightsMiB != 1 || len(p.Candidates) == 0 {
		t.Errorf("plan %s: weights %d MiB, %d candidates", p.Model, p.Estimate.WeightsMiB, len(p.Candidates))
	}
	err = run(context.Background(), []string{"plan", "qwen9:1t", "--registry", reg.Host}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `unknown model "qwen9:1t": not in the catalog, and registry `+reg.Host+" has no such model") {
		t.Errorf("unknown model: %v", err)
	}
	// TestMain's registry is a closed port: unreachable, said at once.
	start := time.Now()
	err = run(context.Background(), []string{"plan", "qwen9:1t"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "could not be reached") || time.Since(start) > 10*time.Second {
		t.Errorf("unreachable registry: %v after %s", err, time.Since(start))
	}
}

// TestPricesAge: plan names the prices' region and date, and warns once they are older than 90 days.
func TestPricesAge(t *testing.T) {
	c := catalog.Default()
	for days, warn := range map[int]bool{5: false, 90: false, 91: true} {
		var out bytes.Buffer
		if err := writePricesAge(&out, c.PricesAsOf.Add(time.Duration(days)*24*time.Hour)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), "prices: "+c.PricesRegion+" as of "+c.PricesAsOf.Format(time.DateOnly)) ||
			strings.Contains(out.String(), "older than 90 days") != warn {
			t.Errorf("%d days: %q", days, out.String())
		}
	}
}
