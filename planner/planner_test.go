package planner

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

func model(t testing.TB, name string) catalog.Model {
	t.Helper()
	m, err := catalog.Default().Model(name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSeedTableGolden reproduces every cell of the seed's recommendation table under the seed policy.
func TestSeedTableGolden(t *testing.T) {
	golden := []struct{ model, cpu, gpu string }{
		{"llama2:7b", "m5.large", "g4dn.xlarge"},
		{"llama2:13b", "m5.xlarge", "g4dn.xlarge"},
		{"codellama:7b", "m5.large", "g4dn.xlarge"},
		{"codellama:13b", "m5.xlarge", "g4dn.2xlarge"},
		{"mistral:7b", "m5.large", "g4dn.xlarge"},
	}
	for _, g := range golden {
		for _, env := range []string{EnvDev, EnvProd} {
			for prefer, want := range map[string]string{PreferCPU: g.cpu, PreferGPU: g.gpu} {
				p, err := New(catalog.Default(), Request{Model: model(t, g.model), Env: env, Prefer: prefer, Policy: PolicySeed})
				if err != nil {
					t.Fatalf("%s %s %s: %v", g.model, env, prefer, err)
				}
				first := p.Candidates[0]
				if first.InstanceType != want {
					t.Errorf("%s env=%s prefer=%s: first candidate %s, seed says %s", g.model, env, prefer, first.InstanceType, want)
				}
				if prefer == PreferCPU {
					it, _ := catalog.Default().InstanceType(want)
					if first.LaunchType != LaunchTypeFargate || first.CPU != it.VCPU*1024 || first.MemoryMiB != it.MemoryMiB {
						t.Errorf("%s: CPU candidate %+v is not the Fargate mirror of %s", g.model, first, want)
					}
				}
			}
		}
	}
}

func TestPlanChoices(t *testing.T) {
	tests := []struct {
		name      string
		req       Request
		model     string
		wantFirst string // placement of the first candidate
		wantType  string
		check     func(t *testing.T, p Plan)
	}{
		{name: "dev small model goes to Fargate Spot", model: "llama2:7b", req: Request{Env: EnvDev},
			wantFirst: "Fargate Spot", wantType: "m5.large",
			check: func(t *testing.T, p Plan) {
				if p.AutoStopSeconds != int(DefaultDevTTL.Seconds()) {
					t.Errorf("dev TTL %d", p.AutoStopSeconds)
				}
				if p.Candidates[1].Placement != "Fargate" {
					t.Errorf("second rung %s, want on-demand Fargate", p.Candidates[1].Placement)
				}
				if s := p.Candidates[0].CapacityProviderStrategy; len(s) != 1 || s[0].CapacityProvider != CapacityProviderFargateSpot {
					t.Errorf("spot strategy %+v", s)
				}
			}},
		{name: "prod has no Spot and no TTL", model: "llama2:7b", req: Request{Env: EnvProd},
			wantFirst: "Fargate", wantType: "m5.large",
			check: func(t *testing.T, p Plan) {
				for _, c := range p.Candidates {
					if c.Placement == "Fargate Spot" {
						t.Error("Spot candidate in prod")
					}
					// Every type AWS reserves is cheaper reserved; p5.48xlarge, which it does not, costs the same.
					if c.ReservedUSD <= 0 || c.ReservedUSD > c.OnDemandUSD || (c.ReservedUSD == c.OnDemandUSD && c.InstanceType != "p5.48xlarge") {
						t.Errorf("%s: reserved %.4f vs on-demand %.4f", c.Placement, c.ReservedUSD, c.OnDemandUSD)
					}
				}
				if p.AutoStopSeconds != 0 {
					t.Errorf("prod TTL %d", p.AutoStopSeconds)
				}
			}},
		{name: "prefer gpu puts the cheapest GPU first", model: "mistral:7b", req: Request{Prefer: PreferGPU, Env: EnvProd},
			wantFirst: "EC2 g4dn.xlarge", wantType: "g4dn.xlarge",
			check: func(t *testing.T, p Plan) {
				c := p.Candidates[0]
				if c.LaunchType != LaunchTypeEC2 || c.TaskDefinition != TaskDefinitionGPU || c.GPUCount != 1 {
					t.Errorf("GPU candidate %+v", c)
				}
				want := PlacementConstraint{Type: "memberOf", Expression: "attribute:ecs.instance-type == g4dn.xlarge"}
				if len(c.PlacementConstraints) != 1 || c.PlacementConstraints[0] != want {
					t.Errorf("constraints %+v", c.PlacementConstraints)
				}
			}},
		{name: "a 70B model ranks GPUs first and rejects partial offload", model: "llama3.1:70b", req: Request{},
			wantFirst: "EC2 Spot g6e.xlarge", wantType: "g6e.xlarge",
			check: func(t *testing.T, p Plan) {
				found := false
				for _, r := range p.Rejected {
					if r.InstanceType == "g4dn.xlarge" && strings.Contains(r.Reason, "partial offload") {
						found = true
					}
				}
				if !found {
					t.Errorf("no partial-offload reject for g4dn.xlarge: %+v", p.Rejected)
				}
			}},
		{name: "a 13B model at or above the floor stays on CPU first, as the seed recommends", model: "llama2:13b",
			req: Request{}, wantFirst: "Fargate Spot", wantType: "m5.xlarge",
			check: func(t *testing.T, p Plan) {
				if s := speedOf(p.Candidates[0]).TokensPerSecond; s < AutoCPUFloorTokensPerSecond {
					t.Errorf("first rung at %.1f tok/s is below the floor", s)
				}
			}},
		{name: "explicit GPU type, seed spelling", model: "llama2:13b", req: Request{InstanceType: "ml.g4dn.2xlarge"},
			wantFirst: "EC2 Spot g4dn.2xlarge", wantType: "g4dn.2xlarge",
			check: func(t *testing.T, p Plan) {
				if len(p.Candidates) != 2 || p.Candidates[1].Placement != "EC2 g4dn.2xlarge" {
					t.Errorf("explicit type in dev gave %+v, want Spot then on-demand", p.Candidates)
				}
			}},
		{name: "explicit CPU type runs on Fargate at its size", model: "llama2:7b", req: Request{InstanceType: "ml.m5.xlarge", Env: EnvProd},
			wantFirst: "Fargate", wantType: "m5.xlarge",
			check: func(t *testing.T, p Plan) {
				if c := p.Candidates[0]; c.CPU != 4096 || c.MemoryMiB != 16384 || len(c.PlacementConstraints) != 0 {
					t.Errorf("candidate %+v", c)
				}
			}},
		{name: "cluster GPU types limit the GPU candidates", model: "llama2:7b",
			req:       Request{Prefer: PreferGPU, GPUInstanceTypes: []string{"g5.xlarge"}},
			wantFirst: "EC2 Spot g5.xlarge", wantType: "g5.xlarge"},
		{name: "cost policy explains where it departs from the seed", model: "codellama:13b", req: Request{Prefer: PreferGPU},
			wantFirst: "EC2 Spot g4dn.xlarge", wantType: "g4dn.xlarge",
			check: func(t *testing.T, p Plan) {
				if !strings.Contains(strings.Join(p.Notes, "\n"), "recommends ml.g4dn.2xlarge") {
					t.Errorf("notes %q", p.Notes)
				}
			}},
		{name: "launch type EC2 drops Fargate", model: "phi3:3.8b", req: Request{LaunchType: "ec2", GPUSpotInstanceTypes: []string{}},
			wantFirst: "EC2 g4dn.xlarge", wantType: "g4dn.xlarge"},
		{name: "longer context needs a bigger Fargate task", model: "llama3.1:8b", req: Request{ContextLength: 32768, Prefer: PreferCPU},
			wantFirst: "Fargate Spot", wantType: "m5.xlarge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.Model = model(t, tt.model)
			p, err := New(catalog.Default(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if got := p.Candidates[0]; got.Placement != tt.wantFirst || got.InstanceType != tt.wantType {
				t.Fatalf("first candidate %s (%s), want %s (%s)", got.Placement, got.InstanceType, tt.wantFirst, tt.wantType)
			}
			if tt.check != nil {
				tt.check(t, p)
			}
		})
	}
}

func TestPlanErrors(t *testing.T) {
	huge := model(t, "llama3.1:70b")
	huge.Name = "giant"
	huge.SizeBytes = 700 << 30 // more than p5.48xlarge's 8 x 80 GiB of GPU memory
	tests := []struct {
		name  string
		req   Request
		check func(error) bool
	}{
		{"GPU type on Fargate", Request{Model: model(t, "llama2:7b"), InstanceType: "g4dn.xlarge", LaunchType: "FARGATE"},
			func(err error) bool { var e *GPUOnFargateError; return errors.As(err, &e) }},
		{"GPU type with cpu preference", Request{Model: model(t, "llama2:7b"), InstanceType: "ml.g4dn.xlarge", Prefer: PreferCPU},
			func(err error) bool { var e *GPUOnFargateError; return errors.As(err, &e) }},
		{"unknown instance type", Request{Model: model(t, "llama2:7b"), InstanceType: "ml.x9.huge"},
			func(err error) bool { var e *catalog.UnknownInstanceTypeError; return errors.As(err, &e) }},
		{"too large for everything", Request{Model: huge},
			func(err error) bool {
				var e *ModelTooLargeError
				return errors.As(err, &e) && e.CPUNeedMiB > e.LargestCPUMiB && e.GPUNeedMiB > e.LargestGPUMiB &&
					strings.Contains(err.Error(), "largest is")
			}},
		{"explicit type too small", Request{Model: model(t, "llama3.1:70b"), InstanceType: "g4dn.xlarge"},
			func(err error) bool { var e *ModelTooLargeError; return errors.As(err, &e) }},
		{"context beyond the model", Request{Model: model(t, "llama2:7b"), ContextLength: 8192},
			func(err error) bool { var e *InvalidRequestError; return errors.As(err, &e) }},
		{"tiny context", Request{Model: model(t, "llama2:7b"), ContextLength: 3},
			func(err error) bool { var e *InvalidRequestError; return errors.As(err, &e) }},
		{"bad env", Request{Model: model(t, "llama2:7b"), Env: "staging"},
			func(err error) bool { var e *InvalidRequestError; return errors.As(err, &e) }},
		{"bad preference", Request{Model: model(t, "llama2:7b"), Prefer: "tpu"},
			func(err error) bool { var e *InvalidRequestError; return errors.As(err, &e) }},
		{"GPU type outside the cluster", Request{Model: model(t, "llama2:7b"), InstanceType: "p3.2xlarge", GPUInstanceTypes: []string{"g4dn.xlarge"}},
			func(err error) bool { var e *InvalidRequestError; return errors.As(err, &e) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(catalog.Default(), tt.req)
			if err == nil || !tt.check(err) {
				t.Fatalf("got error %T %v", err, err)
			}
		})
	}
}

// TestEveryCandidateFits is the property that no placement is offered that cannot hold the model: over every
// catalog model, env, preference, policy and a range of contexts, each candidate fits its estimate, each Fargate
// size is a valid combination, and each GPU candidate is pinned to its type.
func TestEveryCandidateFits(t *testing.T) {
	cat := catalog.Default()
	plans := 0
	for _, m := range cat.Models {
		for _, env := range []string{EnvDev, EnvProd} {
			for _, prefer := range []string{PreferAuto, PreferCPU, PreferGPU} {
				for _, policy := range []string{PolicyCost, PolicySeed} {
					for _, ctx := range []int{0, 256, 2048, 4096, 8192, 32768, 131072} {
						if ctx > m.ContextLength {
							continue
						}
						p, err := New(cat, Request{Model: m, Env: env, Prefer: prefer, Policy: policy, ContextLength: ctx})
						var tooLarge *ModelTooLargeError
						if errors.As(err, &tooLarge) {
							continue
						}
						if err != nil {
							t.Fatalf("%s: %v", m.Name, err)
						}
						plans++
						for _, c := range p.Candidates {
							where := fmt.Sprintf("%s ctx=%d %s %s", m.Name, ctx, env, c.Placement)
							if c.HeadroomMiB < 0 {
								t.Errorf("%s: negative headroom %d", where, c.HeadroomMiB)
							}
							if c.IsGPU() {
								it, _ := cat.InstanceType(c.InstanceType)
								if it.GPUMemoryMiB() < p.Estimate.GPUNeedMiB || len(c.PlacementConstraints) != 1 {
									t.Errorf("%s: GPU candidate does not fit or is not pinned", where)
								}
								continue
							}
							size := catalog.FargateSize{CPU: c.CPU, MemoryMiB: c.MemoryMiB}
							if !cat.Fargate.Valid(size) || c.MemoryMiB < p.Estimate.CPUNeedMiB {
								t.Errorf("%s: Fargate size %+v invalid or too small for %d MiB", where, size, p.Estimate.CPUNeedMiB)
							}
							if len(c.PlacementConstraints) != 0 || c.NetworkMode != "awsvpc" {
								t.Errorf("%s: Fargate candidate with constraints or non-awsvpc", where)
							}
							if env == EnvProd && c.Placement == "Fargate Spot" {
								t.Errorf("%s: Spot in prod", where)
							}
						}
						for i := 1; i < len(p.Candidates); i++ {
							a, b := p.Candidates[i-1], p.Candidates[i]
							if prefer == PreferAuto && policy == PolicyCost && a.IsGPU() == b.IsGPU() && a.HourlyCostUSD > b.HourlyCostUSD {
								t.Errorf("%s: %s ($%.4f) ranked above cheaper %s ($%.4f)", m.Name, a.Placement, a.HourlyCostUSD, b.Placement, b.HourlyCostUSD)
							}
						}
					}
				}
			}
		}
	}
	if plans < 500 {
		t.Errorf("only %d plans checked", plans)
	}
}

func TestEstimateMatchesOllamaFormula(t *testing.T) {
	// llama2:7b at 4096: KV = 2 bytes * 4096 * 32 layers * (128+128) * 32 heads = 2 GiB exactly.
	e, err := EstimateMemory(model(t, "llama2:7b"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	if e.KVCacheMiB != 2048 {
		t.Errorf("KV cache %d MiB, want 2048", e.KVCacheMiB)
	}
	if e.WeightsMiB != 3650 { // 3,826,793,677 bytes
		t.Errorf("weights %d MiB", e.WeightsMiB)
	}
	if e.ModelMiB != e.WeightsMiB+e.KVCacheMiB+e.GraphMiB || e.GPUNeedMiB <= e.ModelMiB || e.CPUNeedMiB <= e.ModelMiB {
		t.Errorf("inconsistent estimate %+v", e)
	}
	// Grouped-query attention: mistral has 8 KV heads, a quarter of llama2's KV cache at the same context.
	m, _ := EstimateMemory(model(t, "mistral:7b"), 4096)
	if m.KVCacheMiB != 512 {
		t.Errorf("mistral KV %d MiB, want 512", m.KVCacheMiB)
	}
}

func BenchmarkPlan(b *testing.B) {
	cat := catalog.Default()
	m := model(b, "llama3.1:8b")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(cat, Request{Model: m, Env: EnvProd, Prefer: PreferAuto}); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDiskSizing: the task's storage holds the image and the model, twice for an upload; Fargate's ephemeral
// storage is sized to it (21-200 GiB) and a placement whose disk cannot hold it is a reject with the reason.
func TestDiskSizing(t *testing.T) {
	m := model(t, "mixtral:8x7b")
	m.SizeBytes = 60 << 30
	find := func(p Plan, instanceType string, launchType string) (Candidate, bool) {
		for _, c := range p.Candidates {
			if c.InstanceType == instanceType || (instanceType == "" && c.LaunchType == launchType) {
				return c, true
			}
		}
		return Candidate{}, false
	}
	pulled, err := New(catalog.Default(), Request{Model: m, Env: EnvProd})
	if err != nil {
		t.Fatal(err)
	}
	if pulled.DiskGiB != 71 {
		t.Errorf("pulled: disk %d GiB, want 71 (5 image + 60 x 1.1)", pulled.DiskGiB)
	}
	if c, ok := find(pulled, "", LaunchTypeFargate); !ok || c.EphemeralStorageGiB != 71 {
		t.Errorf("pulled: Fargate candidate %+v", c)
	}
	if _, ok := find(pulled, "g5.12xlarge", ""); !ok {
		t.Errorf("pulled: g5.12xlarge (100 GiB volume) should hold 71 GiB: %+v", pulled.Rejected)
	}

	uploaded, err := New(catalog.Default(), Request{Model: m, Env: EnvProd, Upload: true})
	if err != nil {
		t.Fatal(err)
	}
	if uploaded.DiskGiB != 137 {
		t.Errorf("uploaded: disk %d GiB, want 137 (5 image + 2 x 60 x 1.1)", uploaded.DiskGiB)
	}
	if c, ok := find(uploaded, "", LaunchTypeFargate); !ok || c.EphemeralStorageGiB != 137 {
		t.Errorf("uploaded: Fargate candidate %+v", c)
	}
	if _, ok := find(uploaded, "g5.12xlarge", ""); ok {
		t.Error("uploaded: g5.12xlarge kept although its volume cannot hold 137 GiB")
	}
	if !slicesContainsReason(uploaded.Rejected, "g5.12xlarge", "needs 137 GiB of disk for the image and the model; the instance's 100 GiB volume has 85 GiB after the system's 15") {
		t.Errorf("uploaded: rejects %+v", uploaded.Rejected)
	}
	bigger, err := New(catalog.Default(), Request{Model: m, Env: EnvProd, Upload: true, EC2DiskGiB: 200})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := find(bigger, "g5.12xlarge", ""); !ok {
		t.Error("a 200 GiB volume should hold 137 GiB")
	}

	m.SizeBytes = 95 << 30
	_, err = New(catalog.Default(), Request{Model: m, Env: EnvProd, Upload: true, LaunchType: LaunchTypeFargate})
	var tooLarge *ModelTooLargeError
	if !errors.As(err, &tooLarge) || !strings.Contains(err.Error(), "needs 214 GiB of disk") || !strings.Contains(err.Error(), "at most 200 GiB") {
		t.Errorf("95 GiB upload on Fargate: %v", err)
	}
}

func slicesContainsReason(rs []Reject, instanceType, reason string) bool {
	for _, r := range rs {
		if r.InstanceType == instanceType && r.Reason == reason {
			return true
		}
	}
	return false
}

// TestGPUSpot: dev GPU placements try the type's Spot capacity first, at the Spot price, with on-demand as a later
// rung; prod and types without Spot capacity get on-demand only.
func TestGPUSpot(t *testing.T) {
	cat := catalog.Default()
	g4, _ := cat.InstanceType("g4dn.xlarge")
	p, err := New(cat, Request{Model: model(t, "mistral:7b"), Prefer: PreferGPU})
	if err != nil {
		t.Fatal(err)
	}
	first := p.Candidates[0]
	if first.Placement != "EC2 Spot g4dn.xlarge" || !first.Spot || first.HourlyCostUSD != g4.SpotUSD ||
		first.ProviderKey() != "g4dn.xlarge:spot" || first.CapacityProviderStrategy != nil {
		t.Errorf("first rung %+v, want g4dn.xlarge Spot at $%.4f", first, g4.SpotUSD)
	}
	i := slices.IndexFunc(p.Candidates, func(c Candidate) bool { return c.Placement == "EC2 g4dn.xlarge" })
	if i < 1 || p.Candidates[i].Spot || p.Candidates[i].HourlyCostUSD != g4.OnDemandUSD || p.Candidates[i].ProviderKey() != "g4dn.xlarge" {
		t.Errorf("on-demand rung at %d: %+v", i, p.Candidates)
	}
	for i := 1; i < len(p.Candidates); i++ {
		if p.Candidates[i].IsGPU() && p.Candidates[i].HourlyCostUSD < p.Candidates[i-1].HourlyCostUSD {
			t.Errorf("rung %d (%s) is cheaper than rung %d", i+1, p.Candidates[i].Placement, i)
		}
	}
	for name, req := range map[string]Request{
		"prod":             {Model: model(t, "mistral:7b"), Prefer: PreferGPU, Env: EnvProd},
		"no Spot capacity": {Model: model(t, "mistral:7b"), Prefer: PreferGPU, GPUSpotInstanceTypes: []string{}},
	} {
		p, err := New(cat, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range p.Candidates {
			if c.IsGPU() && c.Spot {
				t.Errorf("%s: Spot candidate %s", name, c.Placement)
			}
		}
	}
	p, err = New(cat, Request{Model: model(t, "mistral:7b"), Prefer: PreferGPU, GPUSpotInstanceTypes: []string{"g5.xlarge"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Candidates {
		if c.IsGPU() && c.Spot && c.InstanceType != "g5.xlarge" {
			t.Errorf("Spot candidate %s outside the cluster's Spot types", c.Placement)
		}
	}
	if p.Candidates[0].Placement != "EC2 Spot g5.xlarge" {
		t.Errorf("first rung %s, want EC2 Spot g5.xlarge", p.Candidates[0].Placement)
	}
}
