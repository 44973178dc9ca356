package cloud

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	astypes "github.com/aws/aws-sdk-go-v2/service/autoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/local/cloud/query"
)

// ListContainerInstances lists container instances, filtered by an expression in the cluster query language.
// Every local instance is ACTIVE, so a Status other than ACTIVE lists none.
func (e *ECS) ListContainerInstances(_ context.Context, in *ecs.ListContainerInstancesInput, _ ...func(*ecs.Options)) (*ecs.ListContainerInstancesOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	var filter query.Expr
	if f := strings.TrimSpace(aws.ToString(in.Filter)); f != "" {
		var err error
		if filter, err = query.Parse(f); err != nil {
			return nil, invalidParameter("Invalid filter: %v", err)
		}
	}
	e.mu.Lock()
	var arns []string
	for _, ci := range e.instances {
		if in.Status != "" && in.Status != ecstypes.ContainerInstanceStatusActive {
			continue
		}
		if filter == nil || filter.Eval(e.lookup(ci)) {
			arns = append(arns, ci.arn)
		}
	}
	e.mu.Unlock()
	page, next, err := paginate(arns, in.NextToken, in.MaxResults)
	if err != nil {
		return nil, err
	}
	return &ecs.ListContainerInstancesOutput{ContainerInstanceArns: page, NextToken: next}, nil
}

// DescribeContainerInstances reports instances with their registered and remaining resources (CPU and MEMORY as
// integers, GPU as the set of free GPU ids) and attributes.
func (e *ECS) DescribeContainerInstances(_ context.Context, in *ecs.DescribeContainerInstancesInput, _ ...func(*ecs.Options)) (*ecs.DescribeContainerInstancesOutput, error) {
	if err := e.checkCluster(in.Cluster); err != nil {
		return nil, err
	}
	if len(in.ContainerInstances) == 0 || len(in.ContainerInstances) > 100 {
		return nil, invalidParameter("ContainerInstances must have 1 to 100 items.")
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &ecs.DescribeContainerInstancesOutput{}
	for _, ref := range in.ContainerInstances {
		id := ref[strings.LastIndex(ref, "/")+1:]
		i := slices.IndexFunc(e.instances, func(ci *instance) bool { return ci.id == id })
		if i < 0 {
			out.Failures = append(out.Failures, ecstypes.Failure{Arn: aws.String(ref), Reason: aws.String("MISSING")})
			continue
		}
		out.ContainerInstances = append(out.ContainerInstances, e.describeInstance(e.instances[i]))
	}
	return out, nil
}

func (e *ECS) describeInstance(ci *instance) ecstypes.ContainerInstance {
	var free []string
	for _, id := range ci.gpus {
		if !ci.usedGPUs[id] {
			free = append(free, id)
		}
	}
	resources := func(cpu, mem int, gpus []string) []ecstypes.Resource {
		return []ecstypes.Resource{
			{Name: aws.String("CPU"), Type: aws.String("INTEGER"), IntegerValue: int32(cpu)},
			{Name: aws.String("MEMORY"), Type: aws.String("INTEGER"), IntegerValue: int32(mem)},
			{Name: aws.String("PORTS"), Type: aws.String("STRINGSET"), StringSetValue: []string{"22", "2375", "2376", "51678", "51679"}},
			{Name: aws.String("PORTS_UDP"), Type: aws.String("STRINGSET"), StringSetValue: []string{}},
			{Name: aws.String("GPU"), Type: aws.String("STRINGSET"), StringSetValue: gpus},
		}
	}
	out := ecstypes.ContainerInstance{
		ContainerInstanceArn: aws.String(ci.arn), Ec2InstanceId: aws.String(ci.ec2ID), AgentConnected: true,
		Status: aws.String("ACTIVE"), RegisteredAt: aws.Time(ci.registeredAt),
		RunningTasksCount: int32(ci.running), PendingTasksCount: int32(ci.pending),
		RegisteredResources: resources(ci.cpu, ci.mem, slices.Clone(ci.gpus)),
		RemainingResources:  resources(ci.freeCPU, ci.freeMem, free),
	}
	if ci.provider != "" {
		out.CapacityProviderName = aws.String(ci.provider)
	}
	for _, k := range slices.Sorted(maps.Keys(ci.attrs)) {
		a := ecstypes.Attribute{Name: aws.String(k)}
		if v := ci.attrs[k]; v != "" {
			a.Value = aws.String(v)
		}
		out.Attributes = append(out.Attributes, a)
	}
	return out
}

// DescribeCapacityProviders describes FARGATE, FARGATE_SPOT and the configured Auto Scaling group providers
// (all of them when none is named; unknown names are MISSING failures).
func (e *ECS) DescribeCapacityProviders(_ context.Context, in *ecs.DescribeCapacityProvidersInput, _ ...func(*ecs.Options)) (*ecs.DescribeCapacityProvidersOutput, error) {
	names := in.CapacityProviders
	if len(names) == 0 {
		names = []string{"FARGATE", "FARGATE_SPOT"}
		for _, p := range e.cfg.CapacityProviders {
			names = append(names, p.Name)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &ecs.DescribeCapacityProvidersOutput{}
	for _, ref := range names {
		name := ref[strings.LastIndex(ref, "/")+1:]
		cp := ecstypes.CapacityProvider{
			Name: aws.String(name), Status: ecstypes.CapacityProviderStatusActive, Cluster: aws.String(e.cfg.Name),
			CapacityProviderArn: aws.String(fmt.Sprintf("arn:aws:ecs:%s:%s:capacity-provider/%s", e.cfg.Region, e.cfg.Account, name)),
		}
		switch p := e.providers[name]; {
		case name == "FARGATE" || name == "FARGATE_SPOT":
			cp.Type = ecstypes.CapacityProviderTypeFargate
		case p != nil:
			cp.Type = ecstypes.CapacityProviderTypeEc2Autoscaling
			cp.AutoScalingGroupProvider = &ecstypes.AutoScalingGroupProvider{
				AutoScalingGroupArn: aws.String(e.groupArn(p)),
				ManagedScaling: &ecstypes.ManagedScaling{Status: ecstypes.ManagedScalingStatusEnabled,
					TargetCapacity: aws.Int32(100)},
				ManagedTerminationProtection: ecstypes.ManagedTerminationProtectionDisabled,
			}
		default:
			out.Failures = append(out.Failures, ecstypes.Failure{Arn: aws.String(ref), Reason: aws.String("MISSING")})
			continue
		}
		out.CapacityProviders = append(out.CapacityProviders, cp)
	}
	return out, nil
}

func (e *ECS) groupArn(p *provider) string {
	return fmt.Sprintf("arn:aws:autoscaling:%s:%s:autoScalingGroup:%08x-0000-4000-8000-000000000000:autoScalingGroupName/%s",
		e.cfg.Region, e.cfg.Account, len(p.cfg.Name), p.cfg.AutoScalingGroup)
}

// AutoScaling is the Auto Scaling view of the cluster's capacity provider groups.
type AutoScaling struct{ ecs *ECS }

// AutoScaling returns the Auto Scaling API over this cluster's groups, which grow as RunTask scales them out.
func (e *ECS) AutoScaling() *AutoScaling { return &AutoScaling{ecs: e} }

// DescribeAutoScalingGroups describes the named groups (all when none is named); unknown names are left out, as
// on AWS.
func (a *AutoScaling) DescribeAutoScalingGroups(_ context.Context, in *autoscaling.DescribeAutoScalingGroupsInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error) {
	e := a.ecs
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &autoscaling.DescribeAutoScalingGroupsOutput{}
	for _, pc := range e.cfg.CapacityProviders {
		p := e.providers[pc.Name]
		if len(in.AutoScalingGroupNames) > 0 && !slices.Contains(in.AutoScalingGroupNames, pc.AutoScalingGroup) {
			continue
		}
		g := astypes.AutoScalingGroup{
			AutoScalingGroupName: aws.String(pc.AutoScalingGroup), AutoScalingGroupARN: aws.String(e.groupArn(p)),
			DesiredCapacity: aws.Int32(int32(p.desired)), MinSize: aws.Int32(0), MaxSize: aws.Int32(int32(pc.Max)),
			CreatedTime: aws.Time(p.created), HealthCheckType: aws.String("EC2"), Status: nil,
		}
		for _, ci := range e.instances {
			if ci.provider != pc.Name {
				continue
			}
			g.Instances = append(g.Instances, astypes.Instance{
				InstanceId: aws.String(ci.ec2ID), InstanceType: aws.String(ci.typ), AvailabilityZone: aws.String(ci.az),
				HealthStatus: aws.String("Healthy"), LifecycleState: astypes.LifecycleStateInService,
				ProtectedFromScaleIn: aws.Bool(false),
			})
			if !slices.Contains(g.AvailabilityZones, ci.az) {
				g.AvailabilityZones = append(g.AvailabilityZones, ci.az)
			}
		}
		out.AutoScalingGroups = append(out.AutoScalingGroups, g)
	}
	return out, nil
}

// DescribeScalingActivities lists a group's launch activities, newest first, as Auto Scaling does.
func (a *AutoScaling) DescribeScalingActivities(_ context.Context, in *autoscaling.DescribeScalingActivitiesInput, _ ...func(*autoscaling.Options)) (*autoscaling.DescribeScalingActivitiesOutput, error) {
	e := a.ecs
	e.mu.Lock()
	defer e.mu.Unlock()
	out := &autoscaling.DescribeScalingActivitiesOutput{}
	limit := int(aws.ToInt32(in.MaxRecords))
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	for _, pc := range e.cfg.CapacityProviders {
		if name := aws.ToString(in.AutoScalingGroupName); name != "" && name != pc.AutoScalingGroup {
			continue
		}
		p := e.providers[pc.Name]
		for i := len(p.activities) - 1; i >= 0 && len(out.Activities) < limit; i-- {
			act := p.activities[i]
			out.Activities = append(out.Activities, astypes.Activity{
				ActivityId: aws.String(act.id), AutoScalingGroupName: aws.String(pc.AutoScalingGroup),
				Cause:       aws.String("capacity provider " + pc.Name + " managed scaling asked for one more instance"),
				Description: aws.String("Launching a new EC2 instance"), StartTime: aws.Time(act.at), EndTime: aws.Time(act.at),
				StatusCode: astypes.ScalingActivityStatusCode(act.status), StatusMessage: aws.String(act.message),
				Progress: aws.Int32(100),
			})
		}
	}
	return out, nil
}
