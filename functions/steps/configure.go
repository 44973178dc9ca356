package steps

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// Configure ranks the placements that fit the request with the planner; the plan's candidates are the fallback
// ladder the capacity step walks.
type Configure struct {
	Catalog *catalog.Catalog
	// GPUInstanceTypes are the GPU types the cluster has capacity providers for; GPUSpotInstanceTypes those that
	// also have a Spot capacity provider.
	GPUInstanceTypes     []string
	GPUSpotInstanceTypes []string
	// DevTTL is the default time to live of a dev deployment.
	DevTTL time.Duration
	// DefaultPolicy applies when the request names none.
	DefaultPolicy string
	// GPUVolumeGiB is the GPU instances' root volume (0: the planner's default, the stack's launch template).
	GPUVolumeGiB int
	Log          *slog.Logger
}

func (c *Configure) Handle(_ context.Context, s deployment.State) (planner.Plan, error) {
	if s.Request == nil {
		return planner.Plan{}, &deployment.IncompleteStateError{Step: "Choose configuration", Missing: "a request"}
	}
	r := s.Request
	policy := r.Policy
	if policy == "" {
		policy = c.DefaultPolicy
	}
	plan, err := planner.New(c.Catalog, planner.Request{
		Model: r.Model, Env: r.Env, Prefer: r.Prefer, ContextLength: r.ContextLength,
		InstanceType: r.InstanceType, LaunchType: r.LaunchType, Policy: policy,
		GPUInstanceTypes: c.GPUInstanceTypes, GPUSpotInstanceTypes: c.GPUSpotInstanceTypes, DevTTL: c.DevTTL,
		Upload: strings.HasPrefix(r.Source, "s3://"), EC2DiskGiB: c.GPUVolumeGiB, Avoid: r.Avoid,
		MinTokensPerSecond: r.MinTokensPerSecond, MaxTTFTSeconds: r.MaxTimeToFirstToken, Optimize: r.Optimize,
	})
	if err != nil {
		return planner.Plan{}, err
	}
	// A TTL in the request wins over the environment's default, in either direction.
	if r.TTLSeconds >= 0 {
		plan.AutoStopSeconds = r.TTLSeconds
	}
	log := deployment.Logger(c.Log, r.DeploymentID)
	first := plan.Candidates[0]
	log.Info("placement planned", "candidates", len(plan.Candidates), "rejected", len(plan.Rejected),
		"first", first.Placement, "instanceType", first.InstanceType, "hourlyUSD", first.HourlyCostUSD)
	return plan, nil
}
