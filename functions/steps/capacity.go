package steps

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// Capacity checks one candidate per call, so each rung shows in the execution history. Fargate always passes
// (RunTask reports Fargate capacity shortfalls itself); EC2 needs a container instance of the type with enough
// free CPU, memory and GPUs, or an Auto Scaling capacity provider that can still scale out: below its maximum,
// within the account's vCPU quota for the family, and with no recent failed launch. After a model did not fit
// wholly in one GPU type's memory, GPU candidates with no more GPU memory than that type are passed over.
type Capacity struct {
	ECS deployment.ContainerInstances
	// Launches checks that an instance a capacity provider must add can come: quota and recent launch failures.
	Launches *Launches
	Cluster  string
	// Providers maps a GPU instance type to its capacity provider's name.
	Providers map[string]string
	Log       *slog.Logger
}

func (c *Capacity) Handle(ctx context.Context, s deployment.State) (deployment.CapacityState, error) {
	if s.Plan == nil || s.Request == nil {
		return deployment.CapacityState{}, &deployment.IncompleteStateError{Step: "Check EC2 capacity", Missing: "a plan"}
	}
	log := deployment.Logger(c.Log, s.Request.DeploymentID)
	st := deployment.CapacityState{Attempts: []deployment.Attempt{}}
	var notOnGPU *planner.Candidate // the GPU type the model did not wholly fit in
	if prev := s.Capacity; prev != nil {
		st.Cursor, st.Attempts = prev.Cursor, prev.Attempts
		if prev.LastError != nil && prev.Cursor < len(s.Plan.Candidates) {
			failed := s.Plan.Candidates[prev.Cursor]
			st.Attempts = append(st.Attempts, deployment.Attempt{Placement: failed.Placement, InstanceType: failed.InstanceType, Reason: prev.LastError.Cause})
			if prev.LastError.Error == "ModelNotOnGPUError" && failed.IsGPU() {
				notOnGPU = &failed
			}
		}
		// Come back here means the previous candidate was refused, by this step, by RunTask or by Poll health.
		st.Cursor++
	}
	for notOnGPU != nil && st.Cursor < len(s.Plan.Candidates) {
		next := s.Plan.Candidates[st.Cursor]
		if !next.IsGPU() || gpuPoolMiB(next) > gpuPoolMiB(*notOnGPU) {
			break
		}
		st.Attempts = append(st.Attempts, deployment.Attempt{Placement: next.Placement, InstanceType: next.InstanceType, Reason: fmt.Sprintf(
			"passed over: %d MiB of GPU memory is no more than %s's, which did not hold the model", gpuPoolMiB(next), notOnGPU.InstanceType)})
		st.Cursor++
	}
	if st.Cursor >= len(s.Plan.Candidates) {
		return deployment.CapacityState{}, &deployment.NoCapacityError{Attempts: st.Attempts}
	}
	cand := s.Plan.Candidates[st.Cursor]
	ok, reason, err := c.check(ctx, cand)
	if err != nil {
		return deployment.CapacityState{}, err
	}
	log.Info("capacity checked", "candidate", st.Cursor, "placement", cand.Placement, "available", ok, "reason", reason)
	if !ok {
		st.Attempts = append(st.Attempts, deployment.Attempt{Placement: cand.Placement, InstanceType: cand.InstanceType, Reason: reason})
		return st, nil
	}
	st.Available, st.Candidate = true, &cand
	return st, nil
}

func (c *Capacity) check(ctx context.Context, cand planner.Candidate) (bool, string, error) {
	if cand.LaunchType != planner.LaunchTypeEC2 {
		return true, "Fargate", nil
	}
	provider := c.Providers[cand.ProviderKey()]
	if cand.Spot && provider == "" {
		return false, fmt.Sprintf("the cluster has no Spot capacity provider for %s", cand.InstanceType), nil
	}
	free, checked, err := c.freeInstances(ctx, cand, provider)
	if err != nil {
		return false, "", err
	}
	if free > 0 {
		return true, fmt.Sprintf("%d of %d container instances have room", free, checked), nil
	}
	want := fmt.Sprintf("%g vCPU, %d MiB and %d GPU", float64(cand.CPU)/1024, cand.MemoryMiB, cand.GPUCount)
	if provider == "" {
		return false, fmt.Sprintf("no %s container instance has %s free (%d checked) and no capacity provider can add one",
			cand.InstanceType, want, checked), nil
	}
	room, detail, err := c.canScaleOut(ctx, provider, cand)
	if err != nil {
		return false, "", err
	}
	if room {
		return true, "capacity provider " + provider + " will scale out: " + detail, nil
	}
	return false, fmt.Sprintf("no %s container instance has %s free (%d checked) and capacity provider %s cannot add one: %s",
		cand.InstanceType, want, checked, provider, detail), nil
}

// gpuPoolMiB is a GPU candidate's GPU memory: what the model needs there plus what is left.
func gpuPoolMiB(c planner.Candidate) int { return c.NeedMiB + c.HeadroomMiB }

// freeInstances counts the container instances of the candidate's type with room for it. With a capacity provider,
// only its own instances count: RunTask with the provider's strategy places nowhere else.
func (c *Capacity) freeInstances(ctx context.Context, cand planner.Candidate, provider string) (free, checked int, err error) {
	var arns []string
	in := &ecs.ListContainerInstancesInput{
		Cluster: aws.String(c.Cluster),
		Filter:  aws.String("attribute:ecs.instance-type == " + cand.InstanceType),
		Status:  ecstypes.ContainerInstanceStatusActive,
	}
	for {
		out, err := c.ECS.ListContainerInstances(ctx, in)
		if err != nil {
			return 0, 0, deployment.AWSError("ecs:ListContainerInstances", err)
		}
		arns = append(arns, out.ContainerInstanceArns...)
		if out.NextToken == nil {
			break
		}
		in.NextToken = out.NextToken
	}
	for start := 0; start < len(arns); start += 100 {
		out, err := c.ECS.DescribeContainerInstances(ctx, &ecs.DescribeContainerInstancesInput{
			Cluster: aws.String(c.Cluster), ContainerInstances: arns[start:min(start+100, len(arns))],
		})
		if err != nil {
			return 0, 0, deployment.AWSError("ecs:DescribeContainerInstances", err)
		}
		for _, ci := range out.ContainerInstances {
			if provider != "" && aws.ToString(ci.CapacityProviderName) != provider {
				continue
			}
			checked++
			if !ci.AgentConnected {
				continue
			}
			cpu, mem, gpus := remaining(ci.RemainingResources)
			if cpu >= cand.CPU && mem >= cand.MemoryMiB && gpus >= cand.GPUCount {
				free++
			}
		}
	}
	return free, checked, nil
}

// remaining reads a container instance's free CPU units, memory MiB and GPU count.
func remaining(rs []ecstypes.Resource) (cpu, mem, gpus int) {
	for _, r := range rs {
		switch aws.ToString(r.Name) {
		case "CPU":
			cpu = int(r.IntegerValue)
		case "MEMORY":
			mem = int(r.IntegerValue)
		case "GPU":
			gpus = len(r.StringSetValue)
		}
	}
	return cpu, mem, gpus
}

// canScaleOut reports whether a capacity provider's Auto Scaling group can add an instance of the type: below its
// maximum, with room in the account's vCPU quota, and no failed launch in the recent window.
func (c *Capacity) canScaleOut(ctx context.Context, provider string, cand planner.Candidate) (bool, string, error) {
	if c.Launches == nil {
		return false, "no Auto Scaling client", nil
	}
	g, why, err := c.Launches.Group(ctx, provider)
	if err != nil || why != "" {
		return false, why, err
	}
	desired, maxSize := aws.ToInt32(g.DesiredCapacity), aws.ToInt32(g.MaxSize)
	size := fmt.Sprintf("%d of at most %d instances", desired, maxSize)
	if desired >= maxSize {
		return false, "at its maximum (" + size + ")", nil
	}
	failure, err := c.Launches.LaunchFailure(ctx, aws.ToString(g.AutoScalingGroupName), c.Launches.now().Add(-c.Launches.failureWindow()))
	if err != nil || failure != "" {
		return false, failure, err
	}
	ok, quota, err := c.Launches.QuotaRoom(ctx, cand.InstanceType, cand.Spot)
	if err != nil {
		return false, "", err
	}
	if !ok {
		return false, quota, nil
	}
	return true, size + "; " + quota, nil
}
