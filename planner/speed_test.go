package planner

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

func plan7b(t *testing.T, req Request) Plan {
	t.Helper()
	m, err := catalog.Default().Model("llama2:7b")
	if err != nil {
		t.Fatal(err)
	}
	req.Model = m
	p, err := New(catalog.Default(), req)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestSpeedEstimates: every candidate has a decode rate, a time to first token and a cost per million tokens; a
// GPU decodes faster than a CPU task, and a faster GPU faster than a slower one.
func TestSpeedEstimates(t *testing.T) {
	p := plan7b(t, Request{Env: EnvProd})
	rate := map[string]float64{}
	for _, c := range p.Candidates {
		if c.Speed == nil || c.Speed.TokensPerSecond <= 0 || c.Speed.TTFTSeconds <= 0 || c.Speed.USDPerMillionTokens <= 0 {
			t.Fatalf("%s: speed %+v", c.Placement, c.Speed)
		}
		want := c.HourlyCostUSD / (c.Speed.TokensPerSecond * 3600) * 1e6
		if math.Abs(c.Speed.USDPerMillionTokens-want) > 1e-9 {
			t.Errorf("%s: $/M tokens %g, want %g", c.Placement, c.Speed.USDPerMillionTokens, want)
		}
		rate[c.InstanceType] = c.Speed.TokensPerSecond
	}
	if !(rate["g4dn.xlarge"] > rate["m5.large"] && rate["g5.xlarge"] > rate["g4dn.xlarge"]) {
		t.Errorf("rates %v: want a T4 faster than 2 vCPU, an A10G faster than a T4", rate)
	}
	// Ollama splits layers across an instance's GPUs: four A10Gs serve one request no faster than one.
	if rate["g5.12xlarge"] == 0 || rate["g5.12xlarge"] != rate["g5.xlarge"] {
		t.Errorf("g5.12xlarge %g tok/s, g5.xlarge %g: want the same per-request rate", rate["g5.12xlarge"], rate["g5.xlarge"])
	}
}

// TestRequiredSpeed: placements below a required speed are rejects with the reason; an absurd requirement is an
// error; a requirement nothing meets leaves no candidate (the planner's error says why each was refused).
func TestRequiredSpeed(t *testing.T) {
	p := plan7b(t, Request{Env: EnvProd, MinTokensPerSecond: 10})
	for _, c := range p.Candidates {
		if c.Speed.TokensPerSecond < 10 {
			t.Errorf("%s at %.1f tok/s kept despite 10 required", c.Placement, c.Speed.TokensPerSecond)
		}
	}
	found := false
	for _, r := range p.Rejected {
		if strings.HasPrefix(r.Reason, "est. ") && strings.HasSuffix(r.Reason, "tok/s < 10 required") {
			found = true
		}
	}
	if !found {
		t.Errorf("rejects %+v: want a CPU placement refused for its speed", p.Rejected)
	}
	for _, bad := range []Request{{MinTokensPerSecond: -1}, {MinTokensPerSecond: 1e9}, {MinTokensPerSecond: math.NaN()},
		{MaxTTFTSeconds: -3}, {Optimize: "fastest"}} {
		m, _ := catalog.Default().Model("llama2:7b")
		bad.Model = m
		var invalid *InvalidRequestError
		if _, err := New(catalog.Default(), bad); !errors.As(err, &invalid) {
			t.Errorf("%+v: %v, want InvalidRequestError", bad, err)
		}
	}
	m, _ := catalog.Default().Model("llama2:7b")
	_, err := New(catalog.Default(), Request{Model: m, Env: EnvProd, MinTokensPerSecond: 5000})
	var slow *TooSlowError
	if !errors.As(err, &slow) || !strings.Contains(err.Error(), "no placement that fits is fast enough") ||
		!strings.Contains(err.Error(), "tok/s < 5000 required") {
		t.Errorf("5000 tok/s required: %v, want a TooSlowError naming the fastest placement", err)
	}
}

// TestOptimize: speed puts the fastest placement first, cost-per-token the cheapest per million tokens.
func TestOptimize(t *testing.T) {
	fast := plan7b(t, Request{Env: EnvProd, Optimize: OptimizeSpeed})
	for _, c := range fast.Candidates[1:] {
		if c.Speed.TokensPerSecond > fast.Candidates[0].Speed.TokensPerSecond {
			t.Errorf("optimize speed: %s (%.1f) beats the first, %s (%.1f)", c.Placement, c.Speed.TokensPerSecond,
				fast.Candidates[0].Placement, fast.Candidates[0].Speed.TokensPerSecond)
		}
	}
	cheap := plan7b(t, Request{Env: EnvProd, Optimize: OptimizeCostPerToken})
	for _, c := range cheap.Candidates[1:] {
		if c.Speed.USDPerMillionTokens < cheap.Candidates[0].Speed.USDPerMillionTokens {
			t.Errorf("optimize cost-per-token: %s is cheaper per token than the first", c.Placement)
		}
	}
}

// TestAutoFloorFollowsSpeed: the auto ranking turns on the CPU estimate, not on the model's size: a model just
// under 10 GiB of weights whose smallest Fargate size is estimated below the floor ranks GPUs first.
func TestAutoFloorFollowsSpeed(t *testing.T) {
	m := model(t, "llama2:13b")
	m.Name, m.SizeBytes = "heavy-13b", 99*(1<<30)/10
	p, err := New(catalog.Default(), Request{Model: m})
	if err != nil {
		t.Fatal(err)
	}
	cpu := p.Candidates[slices.IndexFunc(p.Candidates, func(c Candidate) bool { return !c.IsGPU() })]
	if s := speedOf(cpu).TokensPerSecond; s >= AutoCPUFloorTokensPerSecond {
		t.Fatalf("CPU estimate %.2f tok/s is not below the floor: the case no longer tests it", s)
	}
	if !p.Candidates[0].IsGPU() {
		t.Errorf("first rung %s, want a GPU", p.Candidates[0].Placement)
	}
	if last := p.Candidates[len(p.Candidates)-1]; last.IsGPU() {
		t.Errorf("last rung %s: the CPU placement should stay on the ladder as a fallback", last.Placement)
	}
	if !strings.Contains(strings.Join(p.Notes, "\n"), "below the 1.5 tok/s floor of auto") {
		t.Errorf("notes %q", p.Notes)
	}
}

// TestMixtureOfExperts: a mixture of experts reads only its active experts per token, so it decodes as fast as a
// dense model of that size, not of its whole size; an embedding model gets no decode estimate at all.
func TestMixtureOfExperts(t *testing.T) {
	moe := model(t, "gpt-oss:20b")
	dense := moe
	dense.ActiveSizeBytes = 0
	a, b := EstimateSpeed(catalog.Default().Hardware, moe, nil, 8, 1), EstimateSpeed(catalog.Default().Hardware, dense, nil, 8, 1)
	if ratio := a.TokensPerSecond / b.TokensPerSecond; ratio < 3 || ratio > 4 {
		t.Errorf("MoE decode %.1f tok/s against %.1f dense (ratio %.2f), want about SizeBytes/ActiveSizeBytes = 3.7", a.TokensPerSecond, b.TokensPerSecond, ratio)
	}
	p, err := New(catalog.Default(), Request{Model: model(t, "nomic-embed-text")})
	if err != nil {
		t.Fatal(err)
	}
	if p.Candidates[0].Speed != nil {
		t.Errorf("embedding model with a decode estimate %+v", p.Candidates[0].Speed)
	}
}
