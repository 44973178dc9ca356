package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

func definePlan(fs *pflag.FlagSet) runner {
	env := fs.String("env", planner.EnvDev, "dev or prod")
	prefer := fs.String("prefer", planner.PreferAuto, "auto, cpu or gpu")
	instanceType := fs.String("instance-type", "", "the one instance type wanted (ml. prefix accepted)")
	contextLength := fs.Int("context", 0, "context length to size for (default 4096, capped at the model's)")
	policy := fs.String("policy", planner.PolicyCost, "cost or seed")
	var speed events.DeployRequest
	addSpeedFlags(fs, &speed)
	reg := fs.String("registry", "", "the registry a model the catalog does not list is resolved in (default $OLLAMA_ECS_REGISTRY or registry.ollama.ai)")
	output := outputFlag(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		cat := catalog.Default()
		model, _, err := registry.Lookup(ctx, cat, registry.NewClient(cmp.Or(*reg, registryHost("")), modelCacheDir()), pos[0])
		if err != nil {
			return err
		}
		plan, err := planner.New(cat, planner.Request{
			Model: model, Env: *env, Prefer: *prefer, ContextLength: *contextLength,
			InstanceType: *instanceType, Policy: *policy,
			MinTokensPerSecond: speed.MinTokensPerSecond, MaxTTFTSeconds: speed.MaxTimeToFirstToken, Optimize: speed.Optimize,
		})
		if err != nil {
			return err
		}
		if *output == "json" {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			return enc.Encode(plan)
		}
		if err := writePlanTable(stdout, plan); err != nil {
			return err
		}
		return writePricesAge(stdout, time.Now())
	}
}

// maxPriceAge is how old the compute data's prices may be before plan says so.
const maxPriceAge = 90 * 24 * time.Hour

// writePricesAge says which prices the plan used, and warns when they are older than maxPriceAge: prices move,
// and `make prices` refreshes them.
func writePricesAge(w io.Writer, now time.Time) error {
	c := catalog.Default()
	age := now.Sub(c.PricesAsOf)
	fmt.Fprintf(w, "\nprices: %s as of %s (%d days old)\n", c.PricesRegion, c.PricesAsOf.Format(time.DateOnly), int(age.Hours()/24))
	if age > maxPriceAge {
		fmt.Fprintf(w, "warning: the prices are older than %d days: refresh them with `make prices` (ollama-ecs prices)\n", int(maxPriceAge.Hours()/24))
	}
	return nil
}

// writePlanTable prints a plan for people: the estimate, the ranked candidates, then the rejects and why.
func writePlanTable(w io.Writer, p planner.Plan) error {
	e := p.Estimate
	fmt.Fprintf(w, "%s  env=%s  prefer=%s  policy=%s  context=%d\n", p.Model, p.Env, p.Prefer, p.Policy, p.ContextLength)
	fmt.Fprintf(w, "memory: weights %s + KV cache %s + graph %s = %s; CPU task needs %s, GPU needs %s\n",
		mib(e.WeightsMiB), mib(e.KVCacheMiB), mib(e.GraphMiB), mib(e.ModelMiB), mib(e.CPUNeedMiB), mib(e.GPUNeedMiB))
	if p.Seed != nil {
		fmt.Fprintf(w, "seed table: memory needed %s (CPU %s, GPU %s); the estimate above adds the KV cache, the graph and the runtime (NEED)\n",
			p.Seed.MemoryNeeded, p.Seed.CPU, p.Seed.GPU)
	}
	if p.AutoStopSeconds > 0 {
		fmt.Fprintf(w, "auto-stop: after %s\n", time.Duration(p.AutoStopSeconds)*time.Second)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	seedCols, seedHead := func(planner.Candidate) string { return "" }, ""
	if p.Seed != nil {
		seedHead = "NEED\tSEED NEEDS\t"
		seedCols = func(c planner.Candidate) string { return mib(c.NeedMiB) + "\t" + p.Seed.MemoryNeeded + "\t" }
	}
	fmt.Fprintln(tw, "#\tPLACEMENT\tINSTANCE\tVCPU\tMEMORY\tGPU\t"+seedHead+"$/HOUR\tON-DEMAND\tSPOT\tRESERVED\tHEADROOM\tEST TOK/S\tTTFT\t$/M TOK\tWHY")
	for i, c := range p.Candidates {
		gpu := "-"
		if c.GPUCount > 0 {
			gpu = fmt.Sprint(c.GPUCount)
		}
		tps, ttft, perM := "-", "-", "-"
		if c.Speed != nil && c.Speed.TokensPerSecond > 0 {
			tps, ttft, perM = fmt.Sprintf("%.1f", c.Speed.TokensPerSecond), fmt.Sprintf("%.1fs", c.Speed.TTFTSeconds),
				fmt.Sprintf("%.2f", c.Speed.USDPerMillionTokens)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%g\t%s\t%s\t%s%.4f\t%.4f\t%.4f\t%.4f\t%s\t%s\t%s\t%s\t%s\n", i+1, c.Placement, c.InstanceType,
			float64(c.CPU)/1024, mib(c.MemoryMiB), gpu, seedCols(c), c.HourlyCostUSD, c.OnDemandUSD, c.SpotUSD, c.ReservedUSD,
			mib(c.HeadroomMiB), tps, ttft, perM, c.Why)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(p.Rejected) > 0 {
		fmt.Fprintln(w, "\nrejected:")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, r := range p.Rejected {
			fmt.Fprintf(tw, "  %s\t%s\n", r.Placement, r.Reason)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	return nil
}

// addSpeedFlags defines the required-performance flags on a request.
func addSpeedFlags(fs *pflag.FlagSet, req *events.DeployRequest) {
	fs.Float64Var(&req.MinTokensPerSecond, "min-tokens-per-second", 0, "refuse placements estimated slower than this decode rate")
	fs.Float64Var(&req.MaxTimeToFirstToken, "max-ttft", 0, "refuse placements estimated to take longer (seconds) to the first token of a 512-token prompt")
	fs.StringVar(&req.Optimize, "optimize", "", "rank by cost (default), speed or cost-per-token")
}

func mib(m int) string {
	if m >= 1024 || m <= -1024 {
		return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(m)/1024), ".0") + " GiB"
	}
	return fmt.Sprintf("%d MiB", m)
}
