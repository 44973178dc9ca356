package steps

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	aas "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling"
	aastypes "github.com/aws/aws-sdk-go-v2/service/applicationautoscaling/types"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// ServiceRunner runs a prod deployment as an ECS service: a task definition revision of its own (the model, its
// source and size, which a service cannot override per task), DesiredCount = MinTasks on the planned placement,
// its tasks registered by ECS with the deployment's target group, and Application Auto Scaling target tracking
// between MinTasks and MaxTasks. ECS replaces a task that dies; scale-in deregisters a task and waits for the
// target group's deregistration delay (its in-flight generations) before stopping it.
//
// The scaling metric is ALBRequestCountPerTarget, the load balancer's requests per minute per task, held at
// TargetRequests. A generation holds one of Ollama's parallel slots (OLLAMA_NUM_PARALLEL, 4 by default) for its
// whole length: the target is the requests per minute one task serves with its slots mostly busy, for requests of
// typical length (4 slots × 60 s / 20 s per request = 12). It needs no metric of our own and sees load within a
// minute; it cannot tell a long generation from a short one, which an in-flight count would, but the load
// balancer publishes no per-target in-flight metric.
type ServiceRunner struct {
	Services deployment.Services
	Scaling  deployment.Scaling
	Cluster  string
	// LoadBalancer is the load balancer's full name (app/<name>/<id>), for the policy's resource label.
	LoadBalancer   string
	TargetRequests int
}

// ServiceCooldowns are the target tracking policy's cooldowns: out fast, in slowly (a task takes minutes to start).
const (
	ScaleOutCooldownSeconds = 60
	ScaleInCooldownSeconds  = 300
)

// Free refuses a deployment id whose service another request started (DeploymentExistsError).
func (sr *ServiceRunner) Free(ctx context.Context, req *deployment.Request) error {
	svc, err := sr.active(ctx, req.DeploymentID)
	if err != nil || svc == nil {
		return err
	}
	if owner := deployment.TagValue(svc.Tags, deployment.TagExecution); owner != req.ExecutionName || owner == "" {
		return &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID, Tasks: []string{aws.ToString(svc.ServiceArn)},
			Reason: "a service of this id, started by another request, is still active; stop it first or deploy under another id"}
	}
	return nil
}

// active is the deployment's service unless there is none or it is inactive.
func (sr *ServiceRunner) active(ctx context.Context, deploymentID string) (*ecstypes.Service, error) {
	got, err := sr.Services.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String(sr.Cluster),
		Services: []string{deployment.ServiceName(deploymentID)}, Include: []ecstypes.ServiceField{ecstypes.ServiceFieldTags}})
	if err != nil {
		return nil, deployment.AWSError("ecs:DescribeServices", err)
	}
	for _, svc := range got.Services {
		// A DRAINING service (being deleted) is not reused; ECS refuses a new one of the name until it is gone.
		if aws.ToString(svc.Status) == "ACTIVE" {
			return &svc, nil
		}
	}
	return nil, nil
}

// Run creates the service, or finds this execution's (a retried step). Another request's service of the id is a
// DeploymentExistsError.
func (sr *ServiceRunner) Run(ctx context.Context, req *deployment.Request, run *ecs.RunTaskInput, route *deployment.Route) (string, error) {
	name := deployment.ServiceName(req.DeploymentID)
	if err := sr.Free(ctx, req); err != nil {
		return "", err
	}
	if svc, err := sr.active(ctx, req.DeploymentID); err != nil {
		return "", err
	} else if svc != nil {
		return aws.ToString(svc.ServiceArn), sr.scale(ctx, req, route)
	}
	td, err := sr.taskDefinition(ctx, req.DeploymentID, run)
	if err != nil {
		return "", err
	}
	var tags []ecstypes.Tag
	for _, t := range run.Tags {
		tags = append(tags, t)
	}
	out, err := sr.Services.CreateService(ctx, &ecs.CreateServiceInput{
		Cluster: aws.String(sr.Cluster), ServiceName: aws.String(name), TaskDefinition: aws.String(td),
		DesiredCount: aws.Int32(int32(req.MinTasks)), LaunchType: run.LaunchType, CapacityProviderStrategy: run.CapacityProviderStrategy,
		PlacementConstraints: run.PlacementConstraints, NetworkConfiguration: run.NetworkConfiguration,
		LoadBalancers: []ecstypes.LoadBalancer{{TargetGroupArn: aws.String(route.TargetGroupArn),
			ContainerName: aws.String(deployment.ContainerName), ContainerPort: aws.Int32(deployment.OllamaPort)}},
		// A new task may take minutes to pull and load its model: ECS must not replace it for failing the load
		// balancer's health checks meanwhile.
		HealthCheckGracePeriodSeconds: aws.Int32(1800),
		DeploymentConfiguration: &ecstypes.DeploymentConfiguration{MinimumHealthyPercent: aws.Int32(100), MaximumPercent: aws.Int32(200),
			DeploymentCircuitBreaker: &ecstypes.DeploymentCircuitBreaker{Enable: true, Rollback: false}},
		Tags: tags, PropagateTags: ecstypes.PropagateTagsService, EnableECSManagedTags: true,
		// CreateService takes tokens of at most 36 characters: a hash of RunTask's (deployment, execution, rung).
		ClientToken: aws.String(shortToken(aws.ToString(run.ClientToken) + "/" + req.ExecutionName)),
	})
	if err != nil {
		if deployment.IsCode(err, "InvalidParameterException") && strings.Contains(err.Error(), "idempotent") {
			return "", &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID, Reason: "ECS refused a second service of this name"}
		}
		return "", deployment.AWSError("ecs:CreateService", err)
	}
	return aws.ToString(out.Service.ServiceArn), sr.scale(ctx, req, route)
}

// taskDefinition registers the deployment's revision: the stack's CPU or GPU family with the model's environment,
// size and GPUs, which RunTask would pass as overrides.
func (sr *ServiceRunner) taskDefinition(ctx context.Context, deploymentID string, run *ecs.RunTaskInput) (string, error) {
	base, err := sr.Services.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: run.TaskDefinition})
	if err != nil {
		return "", deployment.AWSError("ecs:DescribeTaskDefinition", err)
	}
	o := run.Overrides
	in := deployment.CopyTaskDefinition(base.TaskDefinition, deployment.ServiceFamily(deploymentID))
	in.Cpu, in.Memory, in.EphemeralStorage = o.Cpu, o.Memory, o.EphemeralStorage
	in.Tags = []ecstypes.Tag{tag(deployment.TagManagedBy, deployment.ManagedByValue), tag(deployment.TagDeploymentID, deploymentID)}
	for i := range in.ContainerDefinitions {
		c := &in.ContainerDefinitions[i]
		for _, ov := range o.ContainerOverrides {
			if aws.ToString(ov.Name) != aws.ToString(c.Name) {
				continue
			}
			c.Environment = mergeEnv(c.Environment, ov.Environment)
			if len(ov.ResourceRequirements) > 0 {
				c.ResourceRequirements = ov.ResourceRequirements
			}
		}
	}
	out, err := sr.Services.RegisterTaskDefinition(ctx, in)
	if err != nil {
		return "", deployment.AWSError("ecs:RegisterTaskDefinition", err)
	}
	return aws.ToString(out.TaskDefinition.TaskDefinitionArn), nil
}

// shortToken is a 32-character idempotency token derived from s.
func shortToken(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:16])
}

func mergeEnv(base, over []ecstypes.KeyValuePair) []ecstypes.KeyValuePair {
	out := append([]ecstypes.KeyValuePair(nil), base...)
	for _, kv := range over {
		replaced := false
		for i := range out {
			if aws.ToString(out[i].Name) == aws.ToString(kv.Name) {
				out[i], replaced = kv, true
			}
		}
		if !replaced {
			out = append(out, kv)
		}
	}
	return out
}

// ResourceID is a service's Application Auto Scaling resource id.
func (sr *ServiceRunner) ResourceID(deploymentID string) string {
	cluster := sr.Cluster[strings.LastIndex(sr.Cluster, "/")+1:] // the name, also from an ARN
	return "service/" + cluster + "/" + deployment.ServiceName(deploymentID)
}

// scale registers the service's bounds and its target tracking policy (both idempotent).
func (sr *ServiceRunner) scale(ctx context.Context, req *deployment.Request, route *deployment.Route) error {
	return sr.SetBounds(ctx, req.DeploymentID, route.TargetGroupArn, req.MinTasks, req.MaxTasks)
}

// SetBounds sets a service's min and max tasks and its scaling policy; `ollama-ecs scale` calls it too.
func (sr *ServiceRunner) SetBounds(ctx context.Context, deploymentID, targetGroupArn string, lo, hi int) error {
	id := sr.ResourceID(deploymentID)
	_, err := sr.Scaling.RegisterScalableTarget(ctx, &aas.RegisterScalableTargetInput{ServiceNamespace: aastypes.ServiceNamespaceEcs,
		ResourceId: aws.String(id), ScalableDimension: aastypes.ScalableDimensionECSServiceDesiredCount,
		MinCapacity: aws.Int32(int32(lo)), MaxCapacity: aws.Int32(int32(hi))})
	if err != nil {
		return deployment.AWSError("application-autoscaling:RegisterScalableTarget", err)
	}
	target := sr.TargetRequests
	if target <= 0 {
		target = deployment.DefaultConfig().ScaleTargetRequests
	}
	_, err = sr.Scaling.PutScalingPolicy(ctx, &aas.PutScalingPolicyInput{PolicyName: aws.String("requests-per-task"),
		ServiceNamespace: aastypes.ServiceNamespaceEcs, ResourceId: aws.String(id), ScalableDimension: aastypes.ScalableDimensionECSServiceDesiredCount,
		PolicyType: aastypes.PolicyTypeTargetTrackingScaling,
		TargetTrackingScalingPolicyConfiguration: &aastypes.TargetTrackingScalingPolicyConfiguration{
			TargetValue: aws.Float64(float64(target)),
			PredefinedMetricSpecification: &aastypes.PredefinedMetricSpecification{PredefinedMetricType: aastypes.MetricTypeALBRequestCountPerTarget,
				ResourceLabel: aws.String(sr.LoadBalancer + "/" + TargetGroupDimension(targetGroupArn))},
			ScaleOutCooldown: aws.Int32(ScaleOutCooldownSeconds), ScaleInCooldown: aws.Int32(ScaleInCooldownSeconds),
		}})
	if err != nil {
		return deployment.AWSError("application-autoscaling:PutScalingPolicy", err)
	}
	return nil
}

// Remove deletes a deployment's service (its tasks drain and stop) and its scaling; what is gone is fine. With
// execution set, only a service that execution created is removed.
func (sr *ServiceRunner) Remove(ctx context.Context, deploymentID, execution string) (removed string, othersLeft bool, err error) {
	if sr == nil || sr.Services == nil {
		return "", false, nil
	}
	name := deployment.ServiceName(deploymentID)
	got, err := sr.Services.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String(sr.Cluster), Services: []string{name},
		Include: []ecstypes.ServiceField{ecstypes.ServiceFieldTags}})
	if err != nil {
		return "", false, deployment.AWSError("ecs:DescribeServices", err)
	}
	for _, svc := range got.Services {
		if aws.ToString(svc.Status) != "ACTIVE" {
			continue
		}
		if execution != "" && deployment.TagValue(svc.Tags, deployment.TagExecution) != execution {
			return "", true, nil
		}
		if sr.Scaling != nil {
			_, err := sr.Scaling.DeregisterScalableTarget(ctx, &aas.DeregisterScalableTargetInput{ServiceNamespace: aastypes.ServiceNamespaceEcs,
				ResourceId: aws.String(sr.ResourceID(deploymentID)), ScalableDimension: aastypes.ScalableDimensionECSServiceDesiredCount})
			if err != nil && !deployment.IsCode(err, "ObjectNotFoundException") && !deployment.IsCode(err, "ValidationException") {
				return "", false, deployment.AWSError("application-autoscaling:DeregisterScalableTarget", err)
			}
		}
		if _, err := sr.Services.DeleteService(ctx, &ecs.DeleteServiceInput{Cluster: aws.String(sr.Cluster), Service: aws.String(name), Force: aws.Bool(true)}); err != nil &&
			!deployment.IsCode(err, "ServiceNotFoundException") && !deployment.IsCode(err, "ServiceNotActiveException") {
			return "", false, deployment.AWSError("ecs:DeleteService", err)
		}
		return aws.ToString(svc.ServiceArn), false, nil
	}
	return "", false, nil
}

// Observe describes a service's progress: its failed rollout as an error, else how many tasks run of how many
// wanted, and the newest service event.
func (sr *ServiceRunner) Observe(ctx context.Context, serviceArn string) (ecstypes.Service, error) {
	got, err := sr.Services.DescribeServices(ctx, &ecs.DescribeServicesInput{Cluster: aws.String(sr.Cluster), Services: []string{serviceArn}})
	if err != nil {
		return ecstypes.Service{}, deployment.AWSError("ecs:DescribeServices", err)
	}
	if len(got.Services) == 0 || aws.ToString(got.Services[0].Status) != "ACTIVE" {
		return ecstypes.Service{}, &deployment.TaskStoppedError{TaskArn: serviceArn, StopCode: "ServiceInactive", Reason: "the service is no longer active"}
	}
	svc := got.Services[0]
	for _, d := range svc.Deployments {
		if d.RolloutState == ecstypes.DeploymentRolloutStateFailed {
			return svc, &deployment.TaskStoppedError{TaskArn: serviceArn, StopCode: "ServiceDeploymentFailed",
				Reason: fmt.Sprintf("%s (%d tasks failed)", aws.ToString(d.RolloutStateReason), d.FailedTasks)}
		}
	}
	return svc, nil
}

// serviceDetail is a short account of a service's progress for the health state.
func serviceDetail(svc ecstypes.Service) string {
	s := strconv.Itoa(int(svc.RunningCount)) + " of " + strconv.Itoa(int(svc.DesiredCount)) + " tasks running"
	if len(svc.Events) > 0 {
		s += "; " + aws.ToString(svc.Events[0].Message)
	}
	return s
}
