package catalog

import (
	"errors"
	"slices"
	"strconv"
	"testing"
)

func TestEmbeddedDataLoads(t *testing.T) {
	c, err := load()
	if err != nil {
		t.Fatal(err)
	}
	if got := len(c.Models); got < 13 {
		t.Errorf("models: got %d, want the seed's 5 plus at least 8", got)
	}
	for _, name := range []string{"llama2:7b", "llama2:13b", "codellama:7b", "codellama:13b", "mistral:7b"} {
		if _, err := c.Model(name); err != nil {
			t.Errorf("seed model %s: %v", name, err)
		}
		if _, ok := c.SeedFor(name); !ok {
			t.Errorf("seed table lacks %s", name)
		}
	}
	for _, name := range []string{"m5.large", "m5.xlarge", "m5.2xlarge", "g4dn.xlarge", "g4dn.2xlarge", "p3.2xlarge",
		"g5.xlarge", "g6.xlarge", "g6e.xlarge"} {
		it, err := c.InstanceType(name)
		if err != nil {
			t.Errorf("instance type %s: %v", name, err)
			continue
		}
		if it.OnDemandUSD <= 0 || it.SpotUSD <= 0 || it.SpotUSD >= it.OnDemandUSD || it.Reserved1yDiscount <= 0 {
			t.Errorf("%s: implausible prices %+v", name, it)
		}
		if it.HasGPU() {
			if cc, err := strconv.ParseFloat(it.GPU.ComputeCapability, 64); err != nil || cc < 5 {
				t.Errorf("%s: compute capability %q", name, it.GPU.ComputeCapability)
			}
		}
	}
	for _, r := range c.Seed {
		for _, typ := range []string{r.CPU, r.GPU} {
			if _, err := c.InstanceType(typ); err != nil {
				t.Errorf("seed row %s names %s: %v", r.Model, typ, err)
			}
		}
	}
}

func TestFargateSizes(t *testing.T) {
	f := Default().Fargate
	// Every valid combination up to 16 vCPU / 120 GB, per the ECS documentation's table.
	perCPU := map[int]int{256: 3, 512: 4, 1024: 7, 2048: 13, 4096: 23, 8192: 12, 16384: 12}
	got := map[int]int{}
	for _, s := range f.Sizes {
		got[s.CPU]++
	}
	for cpu, n := range perCPU {
		if got[cpu] != n {
			t.Errorf("cpu %d: %d sizes, want %d", cpu, got[cpu], n)
		}
	}
	if !f.Valid(FargateSize{CPU: 16384, MemoryMiB: 122880}) || f.Valid(FargateSize{CPU: 2048, MemoryMiB: 2048}) {
		t.Error("Valid disagrees with the ECS table")
	}
	// The seed's m5.large mirror: 2 vCPU and 8 GB on demand.
	if got := f.OnDemandUSD(FargateSize{CPU: 2048, MemoryMiB: 8192}); got < 0.11 || got > 0.12 {
		t.Errorf("2 vCPU/8 GB: $%.4f/h", got)
	}
}

func TestLookup(t *testing.T) {
	c := Default()
	for in, want := range map[string]string{"Llama2": "llama2:7b", "llama2:latest": "llama2:7b", "Llama2 13B": "llama2:13b",
		" mistral:7b ": "mistral:7b"} {
		m, err := c.Model(in)
		if err != nil || m.Name != want {
			t.Errorf("Model(%q) = %q, %v; want %q", in, m.Name, err, want)
		}
	}
	for in, want := range map[string]string{"ml.g4dn.xlarge": "g4dn.xlarge", "G4DN.XLARGE": "g4dn.xlarge", "ml.m5.large": "m5.large"} {
		it, err := c.InstanceType(in)
		if err != nil || it.Name != want {
			t.Errorf("InstanceType(%q) = %q, %v; want %q", in, it.Name, err, want)
		}
	}
	_, err := c.Model("lama2")
	var unknown *UnknownModelError
	if !errors.As(err, &unknown) || !slices.Contains(unknown.Suggestions, "llama2:7b") {
		t.Errorf("Model(lama2) = %v; want UnknownModelError suggesting llama2:7b", err)
	}
	_, err = c.InstanceType("ml.g9.huge")
	var badType *UnknownInstanceTypeError
	if !errors.As(err, &badType) || !slices.Contains(badType.Valid, "g4dn.xlarge") {
		t.Errorf("InstanceType(ml.g9.huge) = %v; want UnknownInstanceTypeError listing valid types", err)
	}
}

func TestModelValidateRejectsAbsurdFigures(t *testing.T) {
	good, _ := Default().Model("llama2:7b")
	for name, mutate := range map[string]func(*Model){
		"zero size":        func(m *Model) { m.SizeBytes = 0 },
		"huge size":        func(m *Model) { m.SizeBytes = 1 << 50 },
		"no layers":        func(m *Model) { m.BlockCount = 0 },
		"kv > heads":       func(m *Model) { m.HeadCountKV = m.HeadCount + 1 },
		"negative context": func(m *Model) { m.ContextLength = -1 },
		"huge head width":  func(m *Model) { m.KeyLength = 1 << 20 },
	} {
		m := good
		mutate(&m)
		if err := m.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := good.Validate(); err != nil {
		t.Error(err)
	}
}
