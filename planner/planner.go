package planner

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

// Environments, preferences, policies and launch types the planner understands.
const (
	EnvDev  = "dev"
	EnvProd = "prod"

	PreferAuto = "auto"
	PreferCPU  = "cpu"
	PreferGPU  = "gpu"

	// PolicyCost picks the cheapest placement that fits.
	PolicyCost = "cost"
	// PolicySeed puts the seed document's recommendation first for the models its table lists.
	PolicySeed = "seed"

	LaunchTypeFargate = "FARGATE"
	LaunchTypeEC2     = "EC2"

	// CapacityProviderFargateSpot is ECS's built-in Fargate Spot capacity provider.
	CapacityProviderFargateSpot = "FARGATE_SPOT"

	// TaskDefinitionCPU and TaskDefinitionGPU name the two task definition families a candidate runs on.
	TaskDefinitionCPU = "cpu"
	TaskDefinitionGPU = "gpu"

	// DefaultDevTTL is how long a dev deployment runs before it is stopped, unless the request says otherwise.
	DefaultDevTTL = 2 * time.Hour

	// AutoCPUFloorTokensPerSecond is the slowest estimated generation `auto` still ranks first on CPU when CPU is
	// cheaper: about a word a second, a 300-token answer in under four minutes, which is still usable to try a
	// model or for batch work. Below it GPUs rank first and the CPU placement stays on the ladder as a fallback.
	// It keeps the seed's CPU recommendation up to 13-14B (about 2 tok/s on the smallest Fargate size that holds
	// them) and sends larger models to GPUs, and it follows the placement's speed, not only the model's size.
	AutoCPUFloorTokensPerSecond = 1.5
	// minComputeCapability is the oldest CUDA compute capability Ollama supports.
	minComputeCapability = 5.0
)

// Request is what the planner decides from.
type Request struct {
	// Model is a catalog entry or the metadata read from an uploaded GGUF.
	Model catalog.Model
	// Env is dev or prod (default dev).
	Env string
	// Prefer is auto, cpu or gpu (default auto).
	Prefer string
	// ContextLength is the context to size for; 0 means DefaultContextLength.
	ContextLength int
	// InstanceType, when set, is the one placement wanted (the seed's get_task_configuration(model_id,
	// instance_type)): a GPU type runs on EC2 pinned to that type, a CPU type on Fargate at that type's size.
	InstanceType string
	// LaunchType, when set, restricts placements to FARGATE or EC2.
	LaunchType string
	// Policy is cost or seed (default cost).
	Policy string
	// GPUInstanceTypes are the GPU types the cluster can run; empty means every GPU type in the catalog.
	GPUInstanceTypes []string
	// GPUSpotInstanceTypes are the GPU types the cluster also has Spot capacity for, which dev deployments try
	// first: nil means every GPU type considered (the stack's default), an empty list none.
	GPUSpotInstanceTypes []string
	// DevTTL overrides DefaultDevTTL.
	DevTTL time.Duration
	// Upload is true when the model comes from an S3 upload: the task stores it twice (the fetched file, then
	// Ollama's copy); a pulled model is stored once.
	Upload bool
	// EC2DiskGiB is the root volume of the GPU instances (default DefaultEC2DiskGiB, the stack's launch template).
	EC2DiskGiB int
	// Avoid names placements not to choose (Candidate.Placement), e.g. the one an interrupted task ran on.
	Avoid []string
	// MinTokensPerSecond and MaxTTFTSeconds are the required performance: candidates estimated slower are
	// rejects with the reason (0: no requirement).
	MinTokensPerSecond float64
	MaxTTFTSeconds     float64
	// Optimize ranks the candidates: cost (default: the policy's ranking), speed (fastest first) or
	// cost-per-token (cheapest per million generated tokens first).
	Optimize string
}

// Rankings Request.Optimize accepts, and the bounds of a performance requirement.
const (
	OptimizeCost         = "cost"
	OptimizeSpeed        = "speed"
	OptimizeCostPerToken = "cost-per-token"
	MaxTokensPerSecond   = 10000
	MaxTTFTSeconds       = 3600
)

// Disk sizing: a task's storage holds the container image and the model (twice for an upload).
const (
	// DefaultEC2DiskGiB is the GPU instances' root volume in the stack's launch template.
	DefaultEC2DiskGiB = 100
	// ec2SystemReserveGiB is what a GPU instance's root volume holds besides the task's image and model: the ECS
	// GPU AMI's system, Docker's other images and the agent's logs.
	ec2SystemReserveGiB = 15
	// imageDiskGiB is the Ollama image unpacked (with its CUDA libraries); on Fargate the image layers live in
	// the task's ephemeral storage.
	imageDiskGiB = 5
	// FargateMinEphemeralGiB and FargateMaxEphemeralGiB are the range a RunTask override may set (the first
	// 20 GiB are included in the price).
	FargateMinEphemeralGiB = 21
	FargateMaxEphemeralGiB = 200
)

// PlacementConstraint is an ECS placement constraint in the RunTask API's shape.
type PlacementConstraint struct {
	Type       string `json:"type"`
	Expression string `json:"expression"`
}

// CapacityProviderItem is one entry of an ECS capacity provider strategy.
type CapacityProviderItem struct {
	CapacityProvider string `json:"capacityProvider"`
	Weight           int32  `json:"weight"`
}

// Candidate is one placement that fits the model, in the shape RunTask needs.
type Candidate struct {
	// Placement is a short label for people: "Fargate Spot", "Fargate", "EC2 g4dn.xlarge".
	Placement string `json:"placement"`
	// LaunchType is FARGATE or EC2. When CapacityProviderStrategy is set, RunTask sends the strategy instead.
	LaunchType string `json:"launchType"`
	// CapacityProviderStrategy is set for Fargate Spot.
	CapacityProviderStrategy []CapacityProviderItem `json:"capacityProviderStrategy,omitempty"`
	// InstanceType is the EC2 type (no "ml."); for Fargate, the m5 class the task size mirrors.
	InstanceType string `json:"instanceType"`
	// CPU is the task's CPU in ECS units (1024 = 1 vCPU).
	CPU int `json:"cpu"`
	// MemoryMiB is the task's memory limit.
	MemoryMiB int `json:"memoryMiB"`
	// GPUCount is the number of GPUs the task reserves.
	GPUCount int `json:"gpuCount"`
	// PlacementConstraints pin EC2 tasks to the instance type; Fargate takes none.
	PlacementConstraints []PlacementConstraint `json:"placementConstraints"`
	// NetworkMode is awsvpc: Fargate requires it and it gives each task its own address on EC2 too.
	NetworkMode string `json:"networkMode"`
	// TaskDefinition is the family kind: cpu or gpu.
	TaskDefinition string `json:"taskDefinition"`
	// Spot is true for Spot capacity: Fargate Spot, or an EC2 Spot instance from the type's Spot capacity
	// provider.
	Spot bool `json:"spot,omitempty"`
	// HourlyCostUSD is what this placement costs per hour as chosen (the Spot price for Spot capacity).
	HourlyCostUSD float64 `json:"hourlyCostUSD"`
	// OnDemandUSD, SpotUSD and ReservedUSD are the same capacity's hourly price under each purchase option
	// (reserved: one-year reservation for EC2, one-year Compute Savings Plan for Fargate).
	OnDemandUSD float64 `json:"onDemandUSD"`
	SpotUSD     float64 `json:"spotUSD"`
	ReservedUSD float64 `json:"reservedUSD"`
	// Speed is the placement's estimated decode rate, time to first token and cost per million tokens.
	Speed *Speed `json:"speed,omitempty"`
	// EphemeralStorageGiB is the Fargate task's storage (the RunTask override, 21-200 GiB); 0 on EC2, where the
	// instance's root volume holds the model.
	EphemeralStorageGiB int `json:"ephemeralStorageGiB,omitempty"`
	// NeedMiB is the memory the model needs in the pool it runs from: GPU memory on GPU, task memory on CPU.
	NeedMiB int `json:"needMiB"`
	// HeadroomMiB is what is left in that pool after the model.
	HeadroomMiB int `json:"headroomMiB"`
	// Why says why the candidate is on the list at its place.
	Why string `json:"why"`
	// SeedChoice is true for the seed table's recommendation for this model (ranked first under the seed policy).
	SeedChoice bool `json:"seedChoice,omitempty"`
}

// IsGPU reports whether the candidate runs on a GPU instance.
func (c Candidate) IsGPU() bool { return c.TaskDefinition == TaskDefinitionGPU }

// SpotProviderSuffix marks the Spot capacity provider of a GPU type in the stack's provider list
// (GPU_CAPACITY_PROVIDERS: "g4dn.xlarge=...,g4dn.xlarge:spot=...").
const SpotProviderSuffix = ":spot"

// ProviderKey is the key of an EC2 candidate's capacity provider in the stack's provider list: the instance
// type, with SpotProviderSuffix for Spot.
func (c Candidate) ProviderKey() string {
	if c.Spot && c.IsGPU() {
		return c.InstanceType + SpotProviderSuffix
	}
	return c.InstanceType
}

// Reject is a placement that was considered and refused.
type Reject struct {
	Placement    string `json:"placement"`
	InstanceType string `json:"instanceType"`
	Reason       string `json:"reason"`
}

// Plan is the planner's answer: ranked candidates (the fallback ladder) and the rejects with reasons.
type Plan struct {
	Model         string      `json:"model"`
	Env           string      `json:"env"`
	Prefer        string      `json:"prefer"`
	Policy        string      `json:"policy"`
	ContextLength int         `json:"contextLength"`
	Estimate      Estimate    `json:"estimate"`
	Candidates    []Candidate `json:"candidates"`
	Rejected      []Reject    `json:"rejected"`
	// DiskGiB is the storage the task needs: the image, and the model once (pulled) or twice (uploaded), with 10%
	// headroom.
	DiskGiB int `json:"diskGiB"`
	// AutoStopSeconds is the default time to live: DevTTL for dev, 0 (keep running) for prod.
	AutoStopSeconds int `json:"autoStopSeconds"`
	// Notes explain choices, e.g. where the cost policy departs from the seed's table.
	Notes []string `json:"notes,omitempty"`
	// Seed is the seed table's row for the model under the seed policy (nil otherwise), whose "memory needed" is
	// shown beside the estimate.
	Seed *catalog.SeedRecommendation `json:"seed,omitempty"`
}

// ModelTooLargeError is returned when no placement fits the model.
type ModelTooLargeError struct {
	Model         string
	ContextLength int
	// CPUNeedMiB and GPUNeedMiB are what the model needs; LargestCPUMiB and LargestGPUMiB what the largest
	// considered placement of each kind offers (0 when that kind was not considered).
	CPUNeedMiB, GPUNeedMiB       int
	LargestCPUMiB, LargestGPUMiB int
	Rejected                     []Reject
}

func (e *ModelTooLargeError) Error() string {
	msg := fmt.Sprintf("%s at context %d fits no placement:", e.Model, e.ContextLength)
	said := false
	if e.LargestCPUMiB > 0 && e.CPUNeedMiB > e.LargestCPUMiB {
		msg += fmt.Sprintf(" CPU needs %s of task memory, largest is %s;", fmtMiB(e.CPUNeedMiB), fmtMiB(e.LargestCPUMiB))
		said = true
	}
	if e.LargestGPUMiB > 0 && e.GPUNeedMiB > e.LargestGPUMiB {
		msg += fmt.Sprintf(" GPU needs %s of GPU memory, largest is %s;", fmtMiB(e.GPUNeedMiB), fmtMiB(e.LargestGPUMiB))
		said = true
	}
	for _, r := range e.Rejected {
		if said && strings.Contains(r.Reason, "of disk") {
			msg += " " + r.Placement + ": " + r.Reason + ";"
			break
		}
	}
	if !said {
		// Memory is not what stopped it (disk, the cluster's types, compute capability): give the reasons.
		for i, r := range e.Rejected {
			if i == 3 {
				msg += fmt.Sprintf(" and %d more;", len(e.Rejected)-i)
				break
			}
			msg += " " + r.Placement + ": " + r.Reason + ";"
		}
	}
	return strings.TrimSuffix(msg, ";")
}

// GPUOnFargateError is returned when a GPU instance type is asked for together with Fargate or a CPU preference:
// Fargate has no GPUs.
type GPUOnFargateError struct{ InstanceType string }

func (e *GPUOnFargateError) Error() string {
	return fmt.Sprintf("instance type %s has GPUs, which Fargate does not offer: use launch type EC2 (or drop the cpu preference)", e.InstanceType)
}

// New plans a placement for a request against a catalog.
func New(c *catalog.Catalog, req Request) (Plan, error) {
	req, err := normalize(req)
	if err != nil {
		return Plan{}, err
	}
	est, err := EstimateMemory(req.Model, req.ContextLength)
	if err != nil {
		return Plan{}, err
	}
	p := &planning{cat: c, req: req, est: est}
	p.plan = Plan{
		Model: req.Model.Name, Env: req.Env, Prefer: req.Prefer, Policy: req.Policy,
		ContextLength: est.ContextLength, Estimate: est, DiskGiB: diskNeedGiB(est.WeightsMiB, req.Upload),
	}
	if req.Env == EnvDev {
		p.plan.AutoStopSeconds = int(req.DevTTL.Seconds())
	}
	if req.InstanceType != "" {
		if err := p.explicit(); err != nil {
			return Plan{}, err
		}
		p.speed()
	} else {
		p.consider()
		p.speed()
		p.rank()
	}
	p.avoid()
	if p.tooSlow != nil {
		return Plan{}, p.tooSlow
	}
	if len(p.plan.Candidates) == 0 {
		return Plan{}, p.tooLarge()
	}
	if p.plan.Rejected == nil {
		p.plan.Rejected = []Reject{}
	}
	return p.plan, nil
}

func normalize(req Request) (Request, error) {
	if req.Env == "" {
		req.Env = EnvDev
	}
	if req.Prefer == "" {
		req.Prefer = PreferAuto
	}
	if req.Policy == "" {
		req.Policy = PolicyCost
	}
	if req.DevTTL == 0 {
		req.DevTTL = DefaultDevTTL
	}
	if req.EC2DiskGiB == 0 {
		req.EC2DiskGiB = DefaultEC2DiskGiB
	}
	req.LaunchType = strings.ToUpper(req.LaunchType)
	switch {
	case req.Env != EnvDev && req.Env != EnvProd:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("env %q is not dev or prod", req.Env)}
	case req.Prefer != PreferAuto && req.Prefer != PreferCPU && req.Prefer != PreferGPU:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("preference %q is not auto, cpu or gpu", req.Prefer)}
	case req.Policy != PolicyCost && req.Policy != PolicySeed:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("policy %q is not cost or seed", req.Policy)}
	case req.LaunchType != "" && req.LaunchType != LaunchTypeFargate && req.LaunchType != LaunchTypeEC2:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("launch type %q is not FARGATE or EC2", req.LaunchType)}
	case req.DevTTL < time.Minute:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("dev TTL %s is below one minute", req.DevTTL)}
	case !(req.MinTokensPerSecond >= 0 && req.MinTokensPerSecond <= MaxTokensPerSecond):
		return req, &InvalidRequestError{Reason: fmt.Sprintf("a required speed of %g tokens/s is outside 0..%d", req.MinTokensPerSecond, MaxTokensPerSecond)}
	case !(req.MaxTTFTSeconds >= 0 && req.MaxTTFTSeconds <= MaxTTFTSeconds):
		return req, &InvalidRequestError{Reason: fmt.Sprintf("a time to first token of %g s is outside 0..%d", req.MaxTTFTSeconds, MaxTTFTSeconds)}
	case req.Optimize != "" && req.Optimize != OptimizeCost && req.Optimize != OptimizeSpeed && req.Optimize != OptimizeCostPerToken:
		return req, &InvalidRequestError{Reason: fmt.Sprintf("optimize %q is not cost, speed or cost-per-token", req.Optimize)}
	}
	return req, nil
}

// planning is the state of one New call.
type planning struct {
	cat  *catalog.Catalog
	req  Request
	est  Estimate
	plan Plan
	// largest placements seen, for the too-large error
	largestCPU, largestGPU int
	// tooSlow is set when every placement that fits was refused for its speed.
	tooSlow *TooSlowError
}

// explicit handles a request naming its instance type: one placement, or a typed error saying why not.
func (p *planning) explicit() error {
	t, err := p.cat.InstanceType(p.req.InstanceType)
	if err != nil {
		return err
	}
	if t.HasGPU() {
		if p.req.LaunchType == LaunchTypeFargate || p.req.Prefer == PreferCPU {
			return &GPUOnFargateError{InstanceType: t.Name}
		}
		if len(p.req.GPUInstanceTypes) > 0 && !slices.Contains(p.req.GPUInstanceTypes, t.Name) {
			return &InvalidRequestError{Reason: fmt.Sprintf("instance type %s is not one of the cluster's GPU instance types (%s)",
				t.Name, strings.Join(p.req.GPUInstanceTypes, ", "))}
		}
		for _, c := range p.gpuCandidates(t) {
			c.Why = "the instance type the request names"
			p.plan.Candidates = append(p.plan.Candidates, c)
		}
		return nil
	}
	if p.req.LaunchType == LaunchTypeEC2 {
		return &InvalidRequestError{Reason: fmt.Sprintf(
			"instance type %s has no GPU: CPU placements run on Fargate, not EC2", t.Name)}
	}
	size := catalog.FargateSize{CPU: t.VCPU * 1024, MemoryMiB: t.MemoryMiB}
	for _, c := range p.fargateCandidates(size, t.Name) {
		c.Why = "the instance type the request names, as the Fargate size it mirrors"
		p.plan.Candidates = append(p.plan.Candidates, c)
	}
	return nil
}

// consider collects every placement the request allows into candidates and rejects.
func (p *planning) consider() {
	var seed catalog.SeedRecommendation
	useSeed := false
	if p.req.Policy == PolicySeed {
		seed, useSeed = p.cat.SeedFor(p.req.Model.Name)
		if useSeed {
			p.plan.Seed = &seed
		} else {
			p.plan.Notes = append(p.plan.Notes, fmt.Sprintf(
				"the seed's table does not list %s: sized from the estimate", p.req.Model.Name))
		}
	}
	allowCPU := p.req.LaunchType != LaunchTypeEC2
	allowGPU := p.req.LaunchType != LaunchTypeFargate

	if allowCPU {
		if useSeed {
			t, _ := p.cat.InstanceType(seed.CPU)
			size := catalog.FargateSize{CPU: t.VCPU * 1024, MemoryMiB: t.MemoryMiB}
			for _, c := range p.fargateCandidates(size, t.Name) {
				c.Why, c.SeedChoice = "the seed's CPU recommendation ("+seed.CPU+")", true
				p.plan.Candidates = append(p.plan.Candidates, c)
			}
		}
		if size, ok := p.smallestFargate(); ok {
			for _, c := range p.fargateCandidates(size, "") {
				if !p.has(c) {
					c.Why = "smallest Fargate size that fits"
					p.plan.Candidates = append(p.plan.Candidates, c)
				}
			}
		}
	}
	if allowGPU {
		for _, t := range p.cat.InstanceTypes {
			if !t.HasGPU() {
				continue
			}
			if len(p.req.GPUInstanceTypes) > 0 && !slices.Contains(p.req.GPUInstanceTypes, t.Name) {
				p.reject("EC2 "+t.Name, t.Name, "not one of the cluster's GPU instance types ("+
					strings.Join(p.req.GPUInstanceTypes, ", ")+")")
				continue
			}
			for _, c := range p.gpuCandidates(t) {
				c.Why = "fits in GPU memory"
				if useSeed && catalog.NormalizeInstanceType(seed.GPU) == t.Name {
					c.Why, c.SeedChoice = "the seed's GPU recommendation ("+seed.GPU+")", true
				}
				p.plan.Candidates = append(p.plan.Candidates, c)
			}
		}
		if useSeed && !slices.ContainsFunc(p.plan.Candidates, func(c Candidate) bool {
			return c.InstanceType == catalog.NormalizeInstanceType(seed.GPU)
		}) {
			p.plan.Notes = append(p.plan.Notes, "the seed's GPU recommendation "+seed.GPU+" is not available: see the rejects")
		}
	}
}

// avoid turns the candidates the request avoids into rejects.
func (p *planning) avoid() {
	kept := p.plan.Candidates[:0]
	for _, c := range p.plan.Candidates {
		if slices.Contains(p.req.Avoid, c.Placement) {
			p.reject(c.Placement, c.InstanceType, "avoided: an earlier task of this deployment stopped there")
			continue
		}
		kept = append(kept, c)
	}
	p.plan.Candidates = kept
}

func (p *planning) has(c Candidate) bool {
	return slices.ContainsFunc(p.plan.Candidates, func(o Candidate) bool {
		return o.Placement == c.Placement && o.CPU == c.CPU && o.MemoryMiB == c.MemoryMiB
	})
}

// smallestFargate is the cheapest Fargate size with room for the model: CPU follows memory at the m5 ratio of one
// vCPU per 4 GiB (at least 2 vCPU, since token generation is CPU-bound), memory is the smallest valid step above
// the need.
func (p *planning) smallestFargate() (catalog.FargateSize, bool) {
	need := p.est.CPUNeedMiB
	cpu := 16384
	for _, tier := range []int{2048, 4096, 8192, 16384} {
		if tier*4 >= need {
			cpu = tier
			break
		}
	}
	for _, s := range p.cat.Fargate.Sizes {
		if s.CPU == cpu && s.MemoryMiB >= need {
			return s, true
		}
	}
	largest := p.cat.Fargate.Sizes[len(p.cat.Fargate.Sizes)-1]
	p.largestCPU = max(p.largestCPU, largest.MemoryMiB)
	p.reject("Fargate", "", fmt.Sprintf("needs %s of task memory; Fargate's largest task has %s",
		fmtMiB(need), fmtMiB(largest.MemoryMiB)))
	return catalog.FargateSize{}, false
}

// fargateCandidates turns a Fargate size into candidates: Fargate Spot then on-demand in dev (Spot can be short
// of capacity, so on-demand is the next rung), on-demand only in prod. A size the model does not fit is rejected.
func (p *planning) fargateCandidates(size catalog.FargateSize, mirror string) []Candidate {
	f := p.cat.Fargate
	if mirror == "" {
		mirror = p.mirror(size)
	}
	p.largestCPU = max(p.largestCPU, size.MemoryMiB)
	label := fmt.Sprintf("Fargate %s", fmtSize(size))
	if !f.Valid(size) {
		p.reject(label, mirror, fmt.Sprintf("%s is not a valid Fargate CPU/memory combination", fmtSize(size)))
		return nil
	}
	if size.MemoryMiB < p.est.CPUNeedMiB {
		p.reject(label, mirror, fmt.Sprintf("needs %s of task memory at context %d (with %d%% headroom), has %s",
			fmtMiB(p.est.CPUNeedMiB), p.est.ContextLength, int(cpuHeadroom*100), fmtMiB(size.MemoryMiB)))
		return nil
	}
	if need := p.plan.DiskGiB; need > FargateMaxEphemeralGiB {
		p.reject(label, mirror, fmt.Sprintf("needs %d GiB of disk for the image and the model; a Fargate task has at most %d GiB",
			need, FargateMaxEphemeralGiB))
		return nil
	}
	base := Candidate{
		EphemeralStorageGiB:  max(FargateMinEphemeralGiB, p.plan.DiskGiB),
		LaunchType:           LaunchTypeFargate,
		InstanceType:         mirror,
		CPU:                  size.CPU,
		MemoryMiB:            size.MemoryMiB,
		PlacementConstraints: []PlacementConstraint{},
		NetworkMode:          "awsvpc",
		TaskDefinition:       TaskDefinitionCPU,
		OnDemandUSD:          round4(f.OnDemandUSD(size)),
		SpotUSD:              round4(f.SpotUSD(size)),
		ReservedUSD:          round4(f.ReservedUSD(size)),
		NeedMiB:              p.est.CPUNeedMiB,
		HeadroomMiB:          size.MemoryMiB - p.est.CPUNeedMiB,
	}
	onDemand := base
	onDemand.Placement = "Fargate"
	onDemand.HourlyCostUSD = base.OnDemandUSD
	if p.req.Env == EnvProd {
		return []Candidate{onDemand}
	}
	spot := base
	spot.Placement, spot.Spot = "Fargate Spot", true
	spot.CapacityProviderStrategy = []CapacityProviderItem{{CapacityProvider: CapacityProviderFargateSpot, Weight: 1}}
	spot.HourlyCostUSD = base.SpotUSD
	return []Candidate{spot, onDemand}
}

// mirror is the smallest m5 class with at least the Fargate size's CPU and memory.
func (p *planning) mirror(size catalog.FargateSize) string {
	for _, t := range p.cat.InstanceTypes {
		if !t.HasGPU() && strings.HasPrefix(t.Name, "m5.") && t.VCPU*1024 >= size.CPU && t.MemoryMiB >= size.MemoryMiB {
			return t.Name
		}
	}
	return ""
}

// gpuCandidates are a GPU type's placements: in dev, when the cluster has Spot capacity for the type, an EC2 Spot
// instance at the Spot price first, then on-demand (the next rung when Spot is short); on-demand only in prod.
func (p *planning) gpuCandidates(t catalog.InstanceType) []Candidate {
	onDemand, ok := p.gpuCandidate(t)
	if !ok {
		return nil
	}
	if p.req.Env == EnvProd || t.SpotUSD <= 0 ||
		(p.req.GPUSpotInstanceTypes != nil && !slices.Contains(p.req.GPUSpotInstanceTypes, t.Name)) {
		return []Candidate{onDemand}
	}
	spot := onDemand
	spot.Placement, spot.Spot, spot.HourlyCostUSD = "EC2 Spot "+t.Name, true, t.SpotUSD
	return []Candidate{spot, onDemand}
}

// gpuCandidate places the model on one GPU type, or records why it cannot: the whole model must fit in GPU
// memory (a partial offload runs most layers on the CPU and is refused, not chosen silently), and the host must
// hold the runtime. A GPU task takes the whole instance: its GPUs cannot be shared, so a smaller reservation would
// only strand CPU and memory.
func (p *planning) gpuCandidate(t catalog.InstanceType) (Candidate, bool) {
	label := "EC2 " + t.Name
	gpuMiB := t.GPUMemoryMiB()
	p.largestGPU = max(p.largestGPU, gpuMiB)
	if cc, _ := strconv.ParseFloat(t.GPU.ComputeCapability, 64); cc < minComputeCapability {
		p.reject(label, t.Name, fmt.Sprintf("%s has compute capability %s; Ollama needs %.1f or newer",
			t.GPU.Model, t.GPU.ComputeCapability, minComputeCapability))
		return Candidate{}, false
	}
	if gpuMiB < p.est.GPUNeedMiB {
		p.reject(label, t.Name, fmt.Sprintf(
			"partial offload: needs %s of GPU memory at context %d, %d x %s has %s; Ollama would run %d%% of the layers on the CPU",
			fmtMiB(p.est.GPUNeedMiB), p.est.ContextLength, t.GPU.Count, t.GPU.Model, fmtMiB(gpuMiB),
			100-100*max(0, gpuMiB-gpuOverheadMiB*t.GPU.Count)/p.est.ModelMiB))
		return Candidate{}, false
	}
	hostMiB := int(float64(t.MemoryMiB)*ec2UsableShare) / 256 * 256
	if hostMiB < p.est.GPUHostMiB {
		p.reject(label, t.Name, fmt.Sprintf("host memory %s is below the runtime's %s", fmtMiB(hostMiB), fmtMiB(p.est.GPUHostMiB)))
		return Candidate{}, false
	}
	if need, free := p.plan.DiskGiB, p.req.EC2DiskGiB-ec2SystemReserveGiB; need > free {
		p.reject(label, t.Name, fmt.Sprintf("needs %d GiB of disk for the image and the model; the instance's %d GiB volume has %d GiB after the system's %d",
			need, p.req.EC2DiskGiB, free, ec2SystemReserveGiB))
		return Candidate{}, false
	}
	c := Candidate{
		Placement:    label,
		LaunchType:   LaunchTypeEC2,
		InstanceType: t.Name,
		CPU:          t.VCPU * 1024,
		MemoryMiB:    hostMiB,
		GPUCount:     t.GPU.Count,
		PlacementConstraints: []PlacementConstraint{{
			Type: "memberOf", Expression: "attribute:ecs.instance-type == " + t.Name,
		}},
		NetworkMode:    "awsvpc",
		TaskDefinition: TaskDefinitionGPU,
		HourlyCostUSD:  t.OnDemandUSD,
		OnDemandUSD:    t.OnDemandUSD,
		SpotUSD:        t.SpotUSD,
		ReservedUSD:    round4(t.ReservedUSD()),
		NeedMiB:        p.est.GPUNeedMiB,
		HeadroomMiB:    gpuMiB - p.est.GPUNeedMiB,
	}
	return c, true
}

// rank orders candidates: the preferred kind first, then the seed's choices under the seed policy, then by cost.
func (p *planning) rank() {
	kind := func(c Candidate) int {
		switch {
		case p.req.Prefer == PreferGPU:
			return map[bool]int{true: 0, false: 1}[c.IsGPU()]
		case p.req.Prefer == PreferCPU:
			return map[bool]int{true: 1, false: 0}[c.IsGPU()]
		case p.belowFloor(c):
			return 1
		}
		return 0 // ranking by speed or by cost per token decides between CPU and GPU itself
	}
	seedFirst := func(c Candidate) int {
		if c.SeedChoice {
			return 0
		}
		return 1
	}
	sort.SliceStable(p.plan.Candidates, func(i, j int) bool {
		a, b := p.plan.Candidates[i], p.plan.Candidates[j]
		if kind(a) != kind(b) {
			return kind(a) < kind(b)
		}
		if seedFirst(a) != seedFirst(b) {
			return seedFirst(a) < seedFirst(b)
		}
		switch p.req.Optimize {
		case OptimizeSpeed:
			if sa, sb := speedOf(a), speedOf(b); sa.TokensPerSecond != sb.TokensPerSecond {
				return sa.TokensPerSecond > sb.TokensPerSecond
			}
		case OptimizeCostPerToken:
			if sa, sb := speedOf(a), speedOf(b); sa.USDPerMillionTokens != sb.USDPerMillionTokens {
				return sa.USDPerMillionTokens < sb.USDPerMillionTokens
			}
		}
		return a.HourlyCostUSD < b.HourlyCostUSD
	})
	if i := slices.IndexFunc(p.plan.Candidates, p.belowFloor); i > 0 && p.plan.Candidates[0].IsGPU() {
		c := p.plan.Candidates[i]
		p.plan.Notes = append(p.plan.Notes, fmt.Sprintf(
			"%s is estimated at %.1f tok/s, below the %g tok/s floor of auto: GPUs rank first, CPU stays as a fallback",
			c.Placement, speedOf(c).TokensPerSecond, AutoCPUFloorTokensPerSecond))
	}
	p.noteSeedDifference()
}

// belowFloor reports a CPU candidate that the auto preference, ranking by cost, puts after the GPUs because its
// estimated speed is below AutoCPUFloorTokensPerSecond.
func (p *planning) belowFloor(c Candidate) bool {
	return p.req.Prefer == PreferAuto && (p.req.Optimize == "" || p.req.Optimize == OptimizeCost) &&
		!c.IsGPU() && c.Speed != nil && c.Speed.TokensPerSecond < AutoCPUFloorTokensPerSecond
}

// noteSeedDifference explains, under the cost policy, where the best CPU or GPU choice departs from the seed's table.
func (p *planning) noteSeedDifference() {
	seed, ok := p.cat.SeedFor(p.req.Model.Name)
	if !ok || p.req.Policy != PolicyCost {
		return
	}
	for _, col := range []struct {
		gpu  bool
		want string
	}{{false, seed.CPU}, {true, seed.GPU}} {
		i := slices.IndexFunc(p.plan.Candidates, func(c Candidate) bool { return c.IsGPU() == col.gpu })
		if i < 0 {
			continue
		}
		got := p.plan.Candidates[i]
		want := catalog.NormalizeInstanceType(col.want)
		if got.InstanceType == want && (col.gpu || got.MemoryMiB == p.mirrorMemory(want)) {
			continue
		}
		what := got.InstanceType
		if !col.gpu {
			what = fmt.Sprintf("Fargate %s (the %s class)", fmtSize(catalog.FargateSize{CPU: got.CPU, MemoryMiB: got.MemoryMiB}), got.InstanceType)
		}
		p.plan.Notes = append(p.plan.Notes, fmt.Sprintf(
			"differs from the seed: it recommends %s; the cost policy picks %s at $%.4f/h, which fits the %s the model needs",
			col.want, what, got.HourlyCostUSD, fmtMiB(got.NeedMiB)))
	}
}

func (p *planning) mirrorMemory(instanceType string) int {
	t, err := p.cat.InstanceType(instanceType)
	if err != nil {
		return 0
	}
	return t.MemoryMiB
}

func (p *planning) reject(placement, instanceType, reason string) {
	p.plan.Rejected = append(p.plan.Rejected, Reject{Placement: placement, InstanceType: instanceType, Reason: reason})
}

func (p *planning) tooLarge() error {
	return &ModelTooLargeError{
		Model: p.req.Model.Name, ContextLength: p.est.ContextLength,
		CPUNeedMiB: p.est.CPUNeedMiB, GPUNeedMiB: p.est.GPUNeedMiB,
		LargestCPUMiB: p.largestCPU, LargestGPUMiB: p.largestGPU,
		Rejected: p.plan.Rejected,
	}
}

// diskNeedGiB is the storage a task needs: the image, plus the model once (pulled) or twice (an upload is fetched,
// then copied into Ollama's store), with 10% headroom, rounded up.
func diskNeedGiB(weightsMiB int, upload bool) int {
	copies := 1
	if upload {
		copies = 2
	}
	modelGiB := (weightsMiB*copies*11/10 + 1023) / 1024
	return imageDiskGiB + modelGiB
}

func fmtMiB(m int) string {
	if m >= 1024 {
		return fmt.Sprintf("%.1f GiB", float64(m)/1024)
	}
	return fmt.Sprintf("%d MiB", m)
}

func fmtSize(s catalog.FargateSize) string {
	return fmt.Sprintf("%g vCPU/%g GiB", float64(s.CPU)/1024, float64(s.MemoryMiB)/1024)
}

func round4(x float64) float64 { return float64(int64(x*10000+0.5)) / 10000 }
