// Package catalog holds the static facts the planner decides from: which models exist and how they are shaped,
// which compute AWS sells and at what price, and the seed document's recommendation table. The data lives in
// reviewable JSON files under data/, each naming its source and date, embedded into the binary.
package catalog

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

//go:embed data/*.json
var dataFS embed.FS

// Model is what sizing needs to know about one model. Catalog entries and the header of an uploaded GGUF file
// both become a Model, so the planner treats them alike.
type Model struct {
	// Name is the Ollama model name, e.g. "llama2:7b".
	Name string `json:"name"`
	// Aliases are other names users type for the same model (Ollama's ":latest" forms, the seed's "Llama2 7B").
	Aliases []string `json:"aliases,omitempty"`
	// Family is the GGUF general.architecture (llama, qwen2, gemma2, ...).
	Family string `json:"family"`
	// ParameterCount is the number of weights.
	ParameterCount int64 `json:"parameterCount"`
	// Quantization is the default tag's file type, e.g. Q4_0.
	Quantization string `json:"quantization"`
	// SizeBytes is the size of the weights file, which is what Ollama loads into memory.
	SizeBytes int64 `json:"sizeBytes"`
	// BlockCount is the number of transformer layers.
	BlockCount int `json:"blockCount"`
	// EmbeddingLength is the hidden size.
	EmbeddingLength int `json:"embeddingLength"`
	// HeadCount is the number of attention heads.
	HeadCount int `json:"headCount"`
	// HeadCountKV is the number of key/value heads (smaller than HeadCount with grouped-query attention).
	HeadCountKV int `json:"headCountKV"`
	// KeyLength and ValueLength are the per-head key and value widths.
	KeyLength   int `json:"keyLength"`
	ValueLength int `json:"valueLength"`
	// ContextLength is the longest context the model was trained for.
	ContextLength int `json:"contextLength"`
	// VocabSize is the tokenizer's vocabulary size; it bounds the output layer's share of the compute graph.
	VocabSize int `json:"vocabSize"`
	// Embedding is true for an embedding model (its GGUF has a pooling type): it embeds, and cannot generate.
	Embedding bool `json:"embedding,omitempty"`
	// ActiveSizeBytes is what generating one token reads of the weights, for a mixture of experts that runs a few
	// experts per token (0: all of SizeBytes).
	ActiveSizeBytes int64 `json:"activeSizeBytes,omitempty"`
}

// Validate reports figures that cannot describe a real model, so absurd metadata (from an uploaded file, say) is
// refused before anything is sized from it.
func (m Model) Validate() error {
	switch {
	case m.Name == "":
		return fmt.Errorf("model has no name")
	case m.SizeBytes <= 0:
		return fmt.Errorf("model %s: size must be positive, got %d bytes", m.Name, m.SizeBytes)
	case m.SizeBytes > 2<<40:
		return fmt.Errorf("model %s: size %d bytes exceeds 2 TiB", m.Name, m.SizeBytes)
	case m.BlockCount <= 0 || m.BlockCount > 1024:
		return fmt.Errorf("model %s: block count %d is outside 1..1024", m.Name, m.BlockCount)
	case m.EmbeddingLength <= 0 || m.EmbeddingLength > 1<<17:
		return fmt.Errorf("model %s: embedding length %d is outside 1..131072", m.Name, m.EmbeddingLength)
	case m.HeadCount <= 0 || m.HeadCount > 1024:
		return fmt.Errorf("model %s: head count %d is outside 1..1024", m.Name, m.HeadCount)
	case m.HeadCountKV <= 0 || m.HeadCountKV > m.HeadCount:
		return fmt.Errorf("model %s: KV head count %d is outside 1..%d", m.Name, m.HeadCountKV, m.HeadCount)
	case m.KeyLength <= 0 || m.KeyLength > 4096 || m.ValueLength <= 0 || m.ValueLength > 4096:
		return fmt.Errorf("model %s: head widths %d/%d are outside 1..4096", m.Name, m.KeyLength, m.ValueLength)
	case m.ContextLength <= 0 || m.ContextLength > 1<<24:
		return fmt.Errorf("model %s: context length %d is outside 1..16777216", m.Name, m.ContextLength)
	case m.ActiveSizeBytes < 0 || m.ActiveSizeBytes > m.SizeBytes:
		return fmt.Errorf("model %s: active size %d bytes is outside 0..%d", m.Name, m.ActiveSizeBytes, m.SizeBytes)
	case m.VocabSize < 0 || m.VocabSize > 1<<22:
		return fmt.Errorf("model %s: vocabulary size %d is outside 0..4194304", m.Name, m.VocabSize)
	}
	return nil
}

// GPU describes the accelerators of one instance type.
type GPU struct {
	// Model is the GPU's marketing name, e.g. "NVIDIA T4".
	Model string `json:"model"`
	// Count is the number of GPUs in the instance.
	Count int `json:"count"`
	// MemoryMiB is the usable memory of one GPU.
	MemoryMiB int `json:"memoryMiB"`
	// ComputeCapability is the CUDA compute capability; Ollama needs 5.0 or newer.
	ComputeCapability string `json:"computeCapability"`
}

// InstanceType is one EC2 instance type and its prices.
type InstanceType struct {
	// Name is the EC2 name without the seed's "ml." prefix.
	Name string `json:"name"`
	// VCPU is the number of virtual CPUs.
	VCPU int `json:"vcpu"`
	// MemoryMiB is the instance's memory.
	MemoryMiB int `json:"memoryMiB"`
	// GPU is nil for CPU-only types.
	GPU *GPU `json:"gpu,omitempty"`
	// OnDemandUSD is the on-demand hourly price.
	OnDemandUSD float64 `json:"onDemandUSD"`
	// Reserved1yDiscount is the fraction a one-year, no-upfront reservation saves.
	Reserved1yDiscount float64 `json:"reserved1yDiscount"`
	// SpotUSD is a typical Spot hourly price: an estimate, since Spot prices move.
	SpotUSD float64 `json:"spotUSD"`
}

// HasGPU reports whether the type carries accelerators.
func (t InstanceType) HasGPU() bool { return t.GPU != nil && t.GPU.Count > 0 }

// GPUMemoryMiB is the memory of all the instance's GPUs together.
func (t InstanceType) GPUMemoryMiB() int {
	if !t.HasGPU() {
		return 0
	}
	return t.GPU.Count * t.GPU.MemoryMiB
}

// ReservedUSD is the hourly price under a one-year reservation.
func (t InstanceType) ReservedUSD() float64 { return t.OnDemandUSD * (1 - t.Reserved1yDiscount) }

// FargateSize is one valid Fargate task size.
type FargateSize struct {
	// CPU is in ECS units (1024 = 1 vCPU).
	CPU int `json:"cpu"`
	// MemoryMiB is the task memory.
	MemoryMiB int `json:"memoryMiB"`
}

// fargateSizeRange is how the data file lists the sizes allowed for one CPU value.
type fargateSizeRange struct {
	CPU       int   `json:"cpu"`
	MemoryMiB []int `json:"memoryMiB,omitempty"`
	FromMiB   int   `json:"fromMiB,omitempty"`
	ToMiB     int   `json:"toMiB,omitempty"`
	StepMiB   int   `json:"stepMiB,omitempty"`
}

// Fargate holds Fargate's prices and its valid sizes.
type Fargate struct {
	// VCPUHourUSD and GBHourUSD are the on-demand prices per vCPU-hour and GB-hour.
	VCPUHourUSD float64 `json:"vcpuHourUSD"`
	GBHourUSD   float64 `json:"gbHourUSD"`
	// SpotDiscount is the fraction Fargate Spot saves against on-demand.
	SpotDiscount float64 `json:"spotDiscount"`
	// SavingsPlan1yDiscount is what a one-year Compute Savings Plan saves: Fargate's form of reserved capacity.
	SavingsPlan1yDiscount float64 `json:"savingsPlan1yDiscount"`
	// Sizes are every valid CPU/memory combination, smallest first.
	Sizes []FargateSize `json:"-"`

	Ranges []fargateSizeRange `json:"sizes"`
}

// OnDemandUSD is the hourly price of a task of the given size.
func (f Fargate) OnDemandUSD(s FargateSize) float64 {
	return float64(s.CPU)/1024*f.VCPUHourUSD + float64(s.MemoryMiB)/1024*f.GBHourUSD
}

// SpotUSD is the hourly Fargate Spot price of a task of the given size.
func (f Fargate) SpotUSD(s FargateSize) float64 { return f.OnDemandUSD(s) * (1 - f.SpotDiscount) }

// ReservedUSD is the hourly price under a one-year Compute Savings Plan.
func (f Fargate) ReservedUSD(s FargateSize) float64 {
	return f.OnDemandUSD(s) * (1 - f.SavingsPlan1yDiscount)
}

// Valid reports whether Fargate accepts the combination.
func (f Fargate) Valid(s FargateSize) bool { return slices.Contains(f.Sizes, s) }

// SeedRecommendation is one row of the seed document's table.
type SeedRecommendation struct {
	Model        string `json:"model"`
	CPU          string `json:"cpu"`
	GPU          string `json:"gpu"`
	MemoryNeeded string `json:"memoryNeeded"`
}

// Hardware is the figures the speed estimate uses: per GPU model, per vCPU, and the calibrated efficiencies.
type Hardware struct {
	GPUs       map[string]GPUSpeed `json:"gpus"`
	CPU        CPUSpeed            `json:"cpu"`
	Efficiency Efficiency          `json:"efficiency"`
}

// GPUSpeed is one GPU model's memory bandwidth and dense FP16 tensor throughput.
type GPUSpeed struct {
	BandwidthGBs float64 `json:"bandwidthGBs"`
	FP16TFLOPS   float64 `json:"fp16TFLOPS"`
}

// CPUSpeed is a vCPU's share of memory bandwidth (capped for a whole task) and its FLOPS.
type CPUSpeed struct {
	BandwidthGBsPerVCPU float64 `json:"bandwidthGBsPerVCPU"`
	MaxBandwidthGBs     float64 `json:"maxBandwidthGBs"`
	GFLOPSPerVCPU       float64 `json:"gflopsPerVCPU"`
}

// Efficiency is the share of peak bandwidth (decode) and compute (prompt processing) Ollama reaches.
type Efficiency struct {
	CPUDecode  float64 `json:"cpuDecode"`
	CPUPrefill float64 `json:"cpuPrefill"`
	GPUDecode  float64 `json:"gpuDecode"`
	GPUPrefill float64 `json:"gpuPrefill"`
}

// Catalog is the parsed data.
type Catalog struct {
	Models        []Model
	InstanceTypes []InstanceType
	Fargate       Fargate
	Seed          []SeedRecommendation
	Hardware      Hardware
	// Sources names where each data file's figures come from and when they were taken.
	Sources map[string]string
	// PricesRegion and PricesAsOf are the region and the day (UTC) of the compute prices.
	PricesRegion string
	PricesAsOf   time.Time
}

// Default returns the embedded catalog, parsed once.
var Default = sync.OnceValue(func() *Catalog {
	c, err := load()
	if err != nil {
		// The files are embedded and checked by tests: failing here means the binary was built from broken data.
		panic(err)
	}
	return c
})

func load() (*Catalog, error) {
	var models struct {
		Source string  `json:"source"`
		AsOf   string  `json:"asOf"`
		Models []Model `json:"models"`
	}
	var seed struct {
		Source          string               `json:"source"`
		AsOf            string               `json:"asOf"`
		Recommendations []SeedRecommendation `json:"recommendations"`
	}
	var hardware struct {
		Source string `json:"source"`
		AsOf   string `json:"asOf"`
		Hardware
	}
	compute, err := ParseCompute(ComputeJSON())
	if err != nil {
		return nil, err
	}
	for file, dst := range map[string]any{"models.json": &models, "seed.json": &seed, "hardware.json": &hardware} {
		raw, err := dataFS.ReadFile("data/" + file)
		if err != nil {
			return nil, err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(dst); err != nil {
			return nil, fmt.Errorf("catalog %s: %w", file, err)
		}
	}
	c := &Catalog{
		Models:        models.Models,
		InstanceTypes: compute.InstanceTypes,
		Fargate:       compute.Fargate,
		Seed:          seed.Recommendations,
		Hardware:      hardware.Hardware,
		PricesRegion:  compute.Region,
		PricesAsOf:    compute.AsOf,
		Sources: map[string]string{
			"hardware": hardware.Source + " (" + hardware.AsOf + ")",
			"models":   models.Source + " (" + models.AsOf + ")",
			"compute":  compute.Source + ", " + compute.Region + " (" + compute.AsOf.Format(time.DateOnly) + ")",
			"seed":     seed.Source + " (" + seed.AsOf + ")",
		},
	}
	for _, r := range c.Fargate.Ranges {
		mems := r.MemoryMiB
		for m := r.FromMiB; r.StepMiB > 0 && m <= r.ToMiB; m += r.StepMiB {
			mems = append(mems, m)
		}
		for _, m := range mems {
			c.Fargate.Sizes = append(c.Fargate.Sizes, FargateSize{CPU: r.CPU, MemoryMiB: m})
		}
	}
	sort.Slice(c.Fargate.Sizes, func(i, j int) bool {
		a, b := c.Fargate.Sizes[i], c.Fargate.Sizes[j]
		return a.CPU < b.CPU || a.CPU == b.CPU && a.MemoryMiB < b.MemoryMiB
	})
	for _, m := range c.Models {
		if err := m.Validate(); err != nil {
			return nil, fmt.Errorf("catalog models.json: %w", err)
		}
	}
	for _, t := range c.InstanceTypes {
		if t.HasGPU() {
			if g, ok := c.Hardware.GPUs[t.GPU.Model]; !ok || g.BandwidthGBs <= 0 || g.FP16TFLOPS <= 0 {
				return nil, fmt.Errorf("catalog hardware.json: no bandwidth and FLOPS for %s (%s)", t.GPU.Model, t.Name)
			}
		}
	}
	return c, nil
}

// UnknownModelError is returned for a model the catalog does not know; Suggestions are the closest known names.
type UnknownModelError struct {
	Name        string
	Suggestions []string
	// Registry, when set, is the registry that was asked after the catalog and has no such model either.
	Registry string
}

func (e *UnknownModelError) Error() string {
	msg := fmt.Sprintf("unknown model %q", e.Name)
	if e.Registry != "" {
		msg += fmt.Sprintf(": not in the catalog, and registry %s has no such model", e.Registry)
	}
	if len(e.Suggestions) > 0 {
		msg += "; did you mean " + strings.Join(e.Suggestions, ", ") + "?"
	}
	return msg
}

// UnknownInstanceTypeError is returned for an instance type the catalog does not know.
type UnknownInstanceTypeError struct {
	Name  string
	Valid []string
}

func (e *UnknownInstanceTypeError) Error() string {
	return fmt.Sprintf("unknown instance type %q; valid types: %s", e.Name, strings.Join(e.Valid, ", "))
}

// Model finds a model by name or alias, ignoring case. An unknown name gets up to three suggestions.
func (c *Catalog) Model(name string) (Model, error) {
	want := strings.ToLower(strings.TrimSpace(name))
	for _, m := range c.Models {
		if strings.ToLower(m.Name) == want {
			return m, nil
		}
		for _, a := range m.Aliases {
			if strings.ToLower(a) == want {
				return m, nil
			}
		}
	}
	return Model{}, &UnknownModelError{Name: name, Suggestions: c.closestModels(want, 3)}
}

func (c *Catalog) closestModels(want string, n int) []string {
	type scored struct {
		name string
		d    int
	}
	var all []scored
	for _, m := range c.Models {
		base, _, _ := strings.Cut(m.Name, ":")
		d := min(editDistance(want, strings.ToLower(m.Name)), editDistance(want, base))
		for _, a := range m.Aliases {
			d = min(d, editDistance(want, strings.ToLower(a)))
		}
		all = append(all, scored{m.Name, d})
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].d < all[j].d })
	var out []string
	for _, s := range all {
		// Past half the name's length, a "suggestion" is noise.
		if len(out) == n || s.d > max(3, len(want)/2) {
			break
		}
		out = append(out, s.name)
	}
	return out
}

// InstanceType finds an EC2 type; the seed's "ml." spelling is accepted.
func (c *Catalog) InstanceType(name string) (InstanceType, error) {
	want := NormalizeInstanceType(name)
	for _, t := range c.InstanceTypes {
		if t.Name == want {
			return t, nil
		}
	}
	valid := make([]string, 0, len(c.InstanceTypes))
	for _, t := range c.InstanceTypes {
		valid = append(valid, t.Name)
	}
	return InstanceType{}, &UnknownInstanceTypeError{Name: name, Valid: valid}
}

// NormalizeInstanceType strips the seed's "ml." prefix and surrounding space: ml.g4dn.xlarge == g4dn.xlarge.
func NormalizeInstanceType(name string) string {
	name = strings.ToLower(strings.TrimSpace(name))
	return strings.TrimPrefix(name, "ml.")
}

// SeedFor returns the seed's recommendation for a catalog model, if the seed's table lists it.
func (c *Catalog) SeedFor(model string) (SeedRecommendation, bool) {
	for _, r := range c.Seed {
		if r.Model == model {
			return r, true
		}
	}
	return SeedRecommendation{}, false
}

// editDistance is the Levenshtein distance, used only to suggest names.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
