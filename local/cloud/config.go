// Package cloud is the local cloud of local mode: ECS, Auto Scaling, EventBridge Scheduler and S3 behind the same
// SDK v2 method signatures the step handlers call on AWS (the ports in functions/steps), so the state machine runs
// unchanged against it. Each ECS task runs its image's container: the real entry script and `ollama serve` (see
// OllamaRunner), placed on a container
// instance described by a small cluster file, with the resource accounting, placement constraints and lifecycle
// the handlers rely on.
package cloud

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"os"
)

//go:embed cluster.json
var defaultClusterJSON []byte

// Config describes the local cluster. DefaultConfig has one g4dn.xlarge and one g5.xlarge and no capacity
// providers, so that once one GPU is taken the demo shows the planner's fallback to the other type.
type Config struct {
	// Name, Region and Account make up the ARNs.
	Name    string `json:"name"`
	Region  string `json:"region"`
	Account string `json:"account"`
	// ContainerInstances are the EC2 instances registered from the start, by type.
	ContainerInstances []InstanceGroup `json:"containerInstances"`
	// CapacityProviders are Auto Scaling group providers; each starts with Desired instances and adds one per
	// RunTask that names it and finds no room, up to Max.
	CapacityProviders []CapacityProviderConfig `json:"capacityProviders"`
	// Fargate and FargateSpot bound concurrent tasks of each kind.
	Fargate     FargateConfig `json:"fargate"`
	FargateSpot FargateConfig `json:"fargateSpot"`
	// ServiceQuotas are the account's EC2 quotas by quota code (e.g. "L-DB2E81BA", running On-Demand G and VT
	// instances, in vCPUs); a code not listed is not reported, as Service Quotas answers NoSuchResourceException.
	ServiceQuotas map[string]float64 `json:"serviceQuotas,omitempty"`
}

// InstanceGroup is Count identical container instances.
type InstanceGroup struct {
	InstanceType string `json:"instanceType"`
	Count        int    `json:"count"`
	// CPU is in CPU units (1024 per vCPU) and MemoryMiB is what the ECS agent registers, less than the
	// instance's RAM.
	CPU       int `json:"cpu"`
	MemoryMiB int `json:"memoryMiB"`
	GPUs      int `json:"gpus"`
	// AvailabilityZone defaults to the region's "a" zone.
	AvailabilityZone string `json:"availabilityZone,omitempty"`
	// Attributes are custom attributes, testable in placement constraints as attribute:NAME.
	Attributes map[string]string `json:"attributes,omitempty"`
}

// CapacityProviderConfig is an Auto Scaling group capacity provider whose instances are all of one type.
type CapacityProviderConfig struct {
	Name             string `json:"name"`
	AutoScalingGroup string `json:"autoScalingGroup"`
	// Instance is the launch template: what each instance of the group registers (its Count is ignored).
	Instance InstanceGroup `json:"instance"`
	Desired  int           `json:"desired"`
	Max      int           `json:"max"`
	// Spot makes the group's instances EC2 Spot instances, which InterruptSpot can reclaim.
	Spot bool `json:"spot,omitempty"`
	// LaunchFailure, when set, makes every launch of the group fail with this status message (the account's
	// vCPU quota, InsufficientInstanceCapacity): the group records a failed activity and the task that asked
	// for the instance stays PROVISIONING.
	LaunchFailure string `json:"launchFailure,omitempty"`
}

// FargateConfig bounds a Fargate capacity provider.
type FargateConfig struct {
	// MaxTasks is the most tasks running at once; 0 means no limit.
	MaxTasks int `json:"maxTasks"`
	// NoCapacity makes every RunTask report that capacity is unavailable (Fargate Spot runs out for real).
	NoCapacity bool `json:"noCapacity,omitempty"`
}

// DefaultConfig is the embedded cluster.json.
func DefaultConfig() Config {
	c, err := ParseConfig(defaultClusterJSON)
	if err != nil {
		panic("embedded cluster.json: " + err.Error()) // a broken embedded file fails every test at once
	}
	return c
}

// LoadConfig reads a cluster file.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	c, err := ParseConfig(data)
	if err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseConfig decodes a cluster file strictly (an unknown field is a typo, not an extension) and checks it.
func ParseConfig(data []byte) (Config, error) {
	var c Config
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Config{}, fmt.Errorf("cluster config: %w", err)
	}
	return c, c.Validate()
}

// Validate reports the first thing that cannot make a cluster.
func (c Config) Validate() error {
	if c.Name == "" || c.Region == "" || c.Account == "" {
		return fmt.Errorf("cluster config: name, region and account are required")
	}
	check := func(where string, g InstanceGroup) error {
		if g.InstanceType == "" || g.CPU <= 0 || g.MemoryMiB <= 0 || g.GPUs < 0 || g.Count < 0 {
			return fmt.Errorf("cluster config: %s: instanceType, a positive cpu and memoryMiB, and gpus >= 0 are required", where)
		}
		return nil
	}
	for i, g := range c.ContainerInstances {
		if err := check(fmt.Sprintf("containerInstances[%d]", i), g); err != nil {
			return err
		}
	}
	seen := map[string]bool{"FARGATE": true, "FARGATE_SPOT": true}
	for i, p := range c.CapacityProviders {
		where := fmt.Sprintf("capacityProviders[%d]", i)
		if p.Name == "" || p.AutoScalingGroup == "" || seen[p.Name] {
			return fmt.Errorf("cluster config: %s: a unique name and an autoScalingGroup are required", where)
		}
		seen[p.Name] = true
		if p.Desired < 0 || p.Max < p.Desired {
			return fmt.Errorf("cluster config: %s: want 0 <= desired <= max", where)
		}
		if err := check(where+".instance", p.Instance); err != nil {
			return err
		}
	}
	if c.Fargate.MaxTasks < 0 || c.FargateSpot.MaxTasks < 0 {
		return fmt.Errorf("cluster config: maxTasks must be >= 0")
	}
	return nil
}
