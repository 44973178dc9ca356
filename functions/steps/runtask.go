package steps

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// RunTask starts the deployment's task on the chosen candidate. The deployment id and the candidate's rung make the
// client token, so a redelivered event or a retried step never starts a second task, and the deployment id is the
// task's startedBy, so cleanup can always find it.
type RunTask struct {
	ECS     deployment.TaskRunner
	Cluster string
	// CPUTaskDefinition and GPUTaskDefinition are the two task definition families (or ARNs).
	CPUTaskDefinition, GPUTaskDefinition string
	Subnets, SecurityGroups              []string
	// Providers maps a GPU instance type to its capacity provider, which RunTask then uses so ECS can scale out.
	Providers map[string]string
	// Router puts the deployment on the load balancer before its task starts (nil: a stack without one, where
	// the endpoint is the task's own address). APIKeys is the stack's default for deployments behind a key.
	Router  *Router
	APIKeys bool
	// Services runs prod deployments as ECS services behind their route (nil: every deployment is one task).
	Services *ServiceRunner
	Now      func() time.Time
	Log      *slog.Logger
}

func (r *RunTask) Handle(ctx context.Context, s deployment.State) (deployment.TaskInfo, error) {
	if s.Request == nil || s.Capacity == nil || s.Capacity.Candidate == nil {
		return deployment.TaskInfo{}, &deployment.IncompleteStateError{Step: "Run ECS task", Missing: "a chosen candidate"}
	}
	req, cand := s.Request, *s.Capacity.Candidate
	log := deployment.Logger(r.Log, req.DeploymentID)
	// ECS's client token protects a deployment id for about 24 hours; after that a second request with the same
	// id would start a second task. A live task of the id from another execution means the id is taken.
	live, err := deployment.DeploymentTasks(ctx, r.ECS, r.Cluster, req.DeploymentID)
	if err != nil {
		return deployment.TaskInfo{}, err
	}
	var others []string
	for _, t := range live {
		if deployment.TagValue(t.Tags, deployment.TagExecution) != req.ExecutionName || req.ExecutionName == "" {
			others = append(others, aws.ToString(t.TaskArn))
		}
	}
	if len(others) > 0 {
		return deployment.TaskInfo{}, &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID, Tasks: others,
			Reason: "a task of this id, started by another request, is still running; stop it first or deploy under another id"}
	}
	in := r.input(req, s.Image, cand, s.Capacity.Cursor)
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	info := deployment.TaskInfo{
		Placement: cand.Placement, LaunchType: cand.LaunchType, InstanceType: cand.InstanceType, GPU: cand.IsGPU(),
		CPU: cand.CPU, MemoryMiB: cand.MemoryMiB, HourlyCostUSD: cand.HourlyCostUSD,
		StartedAt: now().UTC().Format(time.RFC3339),
	}
	if req.Env == "prod" && req.MinTasks > 0 && r.Services != nil && r.Router != nil {
		// A service needs its target group first; the service's own check keeps another request's route intact.
		if err := r.Services.Free(ctx, req); err != nil {
			return deployment.TaskInfo{}, err
		}
		route, err := r.route(ctx, req)
		if err != nil {
			return deployment.TaskInfo{}, err
		}
		arn, err := r.Services.Run(ctx, req, in, route)
		if err != nil {
			return deployment.TaskInfo{}, err
		}
		info.Route, info.ServiceArn, info.DesiredTasks = route, arn, req.MinTasks
		info.HourlyCostUSD = cand.HourlyCostUSD * float64(req.MinTasks)
		log.Info("service started", "serviceArn", arn, "placement", info.Placement, "minTasks", req.MinTasks, "maxTasks", req.MaxTasks)
		return info, nil
	}
	if r.Services != nil {
		// A dev task must not take over a prod service's id (and its target group).
		if svc, err := r.Services.active(ctx, req.DeploymentID); err != nil {
			return deployment.TaskInfo{}, err
		} else if svc != nil {
			return deployment.TaskInfo{}, &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID, Tasks: []string{aws.ToString(svc.ServiceArn)},
				Reason: "a prod service of this id is active; stop it first or deploy under another id"}
		}
	}
	out, err := r.ECS.RunTask(ctx, in)
	var conflict *ecstypes.ConflictException
	if errors.As(err, &conflict) || deployment.IsCode(err, "ConflictException") {
		// The same client token under other parameters: another request (another execution, requester, context
		// or TTL) used this deployment id within ECS's 24-hour token lifetime.
		e := &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID,
			Reason: "ECS refused its client token, used by another request in the last 24 hours (even if that deployment has stopped since); deploy under another id"}
		if conflict != nil {
			e.Tasks = conflict.ResourceIds
		}
		return deployment.TaskInfo{}, e
	}
	if err != nil {
		return deployment.TaskInfo{}, deployment.AWSError("ecs:RunTask", err)
	}
	if len(out.Failures) > 0 || len(out.Tasks) == 0 {
		if len(out.Tasks) > 0 {
			// A task did start: it must be accounted for, so this is not a clean capacity miss.
			return deployment.TaskInfo{}, &deployment.AWSRequestError{Op: "ecs:RunTask", Code: "PartialFailure", Message: describeFailures(out.Failures)}
		}
		reason := describeFailures(out.Failures)
		if reason == "" {
			reason = "ECS placed no task and gave no reason"
		}
		log.Warn("run task refused", "placement", cand.Placement, "reason", reason)
		return deployment.TaskInfo{}, &deployment.CapacityError{Reason: cand.Placement + ": " + reason}
	}
	t := out.Tasks[0]
	// Whether ECS compares tags when it matches a client token is not documented: make sure the task ECS answered
	// with is this execution's, and never take over another request's.
	if owner, err := r.owner(ctx, aws.ToString(t.TaskArn)); err != nil {
		return deployment.TaskInfo{}, err
	} else if owner != req.ExecutionName {
		return deployment.TaskInfo{}, &deployment.DeploymentExistsError{DeploymentID: req.DeploymentID, Tasks: []string{aws.ToString(t.TaskArn)},
			Reason: "ECS answered with a task another request started; deploy under another id"}
	}
	info.TaskArn, info.ClusterArn = aws.ToString(t.TaskArn), aws.ToString(t.ClusterArn)
	// The route comes once the task is this execution's: a refused or conflicting request leaves none behind, and
	// a failure from here on is cleaned up (task and route) by the state machine.
	if r.Router != nil {
		if info.Route, err = r.route(ctx, req); err != nil {
			return deployment.TaskInfo{}, err
		}
	}
	log.Info("task started", "taskArn", info.TaskArn, "placement", info.Placement, "instanceType", info.InstanceType)
	return info, nil
}

// route puts the deployment on the load balancer, behind a key if the request (or the stack) asks for one.
func (r *RunTask) route(ctx context.Context, req *deployment.Request) (*deployment.Route, error) {
	withKey := r.APIKeys
	if req.APIKey != nil {
		withKey = *req.APIKey
	}
	rt, err := r.Router.Ensure(ctx, req.DeploymentID, req.ModelName, withKey)
	if err != nil {
		return nil, err
	}
	return &rt, nil
}

// owner is the execution a task's tags name.
func (r *RunTask) owner(ctx context.Context, taskArn string) (string, error) {
	out, err := r.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(r.Cluster), Tasks: []string{taskArn},
		Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if err != nil {
		return "", deployment.AWSError("ecs:DescribeTasks", err)
	}
	if len(out.Tasks) == 0 {
		return "", &deployment.AWSServiceError{Op: "ecs:DescribeTasks", Code: "Missing", Message: "the task RunTask started is not known yet: " + taskArn}
	}
	return deployment.TagValue(out.Tasks[0].Tags, deployment.TagExecution), nil
}

// clientToken is RunTask's idempotency token: the deployment and the rung of the ladder, joined by ".", which no
// deployment id contains. A retried step sends the same request for the same rung, so ECS answers with the task it
// started; another request under the same id conflicts (DeploymentExistsError); the next rung after a refusal is a
// request of its own. A restart after an interruption (an execution named after the dead task) adds a hash of its
// execution's name, so no restart ever reuses another's token.
func clientToken(req *deployment.Request, cursor int) string {
	if req.Restart > 0 || req.Wake > 0 {
		sum := sha256.Sum256([]byte(req.ExecutionName))
		return fmt.Sprintf("%s.%s.%d", req.DeploymentID, hex.EncodeToString(sum[:4]), cursor)
	}
	return req.DeploymentID + "." + strconv.Itoa(cursor)
}

// input is the RunTask request for one candidate: the model image's task definition when "Ensure model image"
// made one (the task then starts without pulling), else the stack's.
func (r *RunTask) input(req *deployment.Request, image *deployment.ImageState, cand planner.Candidate, cursor int) *ecs.RunTaskInput {
	families := deployment.TaskDefinitions{CPU: r.CPUTaskDefinition, GPU: r.GPUTaskDefinition}
	if image != nil && image.TaskDefinitions != nil {
		families = *image.TaskDefinitions
	}
	td := families.CPU
	if cand.IsGPU() {
		td = families.GPU
	}
	env := []ecstypes.KeyValuePair{
		{Name: aws.String(deployment.EnvModel), Value: aws.String(req.ModelName)},
		{Name: aws.String(deployment.EnvSource), Value: aws.String(req.Source)},
		{Name: aws.String(deployment.EnvKeepAlive), Value: aws.String("-1")},
	}
	if req.ContextLength > 0 {
		env = append(env, ecstypes.KeyValuePair{Name: aws.String(deployment.EnvContextLength), Value: aws.String(strconv.Itoa(req.ContextLength))})
	}
	ollama := ecstypes.ContainerOverride{Name: aws.String(deployment.ContainerName), Environment: env}
	if cand.GPUCount > 0 {
		ollama.ResourceRequirements = []ecstypes.ResourceRequirement{{
			Type: ecstypes.ResourceTypeGpu, Value: aws.String(strconv.Itoa(cand.GPUCount)),
		}}
	}
	in := &ecs.RunTaskInput{
		Cluster:        aws.String(r.Cluster),
		TaskDefinition: aws.String(td),
		Count:          aws.Int32(1),
		ClientToken:    aws.String(clientToken(req, cursor)),
		StartedBy:      aws.String(req.DeploymentID),
		Overrides: &ecstypes.TaskOverride{
			Cpu:              aws.String(strconv.Itoa(cand.CPU)),
			Memory:           aws.String(strconv.Itoa(cand.MemoryMiB)),
			EphemeralStorage: ephemeralStorage(cand),
			ContainerOverrides: []ecstypes.ContainerOverride{ollama, {
				Name:        aws.String(deployment.FetchContainerName),
				Environment: []ecstypes.KeyValuePair{{Name: aws.String(deployment.EnvSource), Value: aws.String(req.Source)}},
			}},
		},
		NetworkConfiguration: &ecstypes.NetworkConfiguration{AwsvpcConfiguration: &ecstypes.AwsVpcConfiguration{
			Subnets: r.Subnets, SecurityGroups: r.SecurityGroups, AssignPublicIp: ecstypes.AssignPublicIpDisabled,
		}},
		EnableECSManagedTags: true,
		Tags: []ecstypes.Tag{
			tag(deployment.TagManagedBy, deployment.ManagedByValue),
			tag(deployment.TagDeploymentID, req.DeploymentID),
			tag(deployment.TagExecution, req.ExecutionName),
			tag(deployment.TagModel, req.ModelName),
			tag(deployment.TagEnv, req.Env),
			tag(deployment.TagRequester, cmp.Or(req.Requester, "unknown")),
			tag(deployment.TagPlacement, cand.Placement),
			tag(deployment.TagInstanceType, cand.InstanceType),
			tag(deployment.TagHourlyUSD, strconv.FormatFloat(cand.HourlyCostUSD, 'f', 4, 64)),
		},
	}
	in.Tags = append(in.Tags, tag(deployment.TagWake, strconv.FormatBool(req.WakeOnRequest)), tag(deployment.TagWakeCount, strconv.Itoa(req.Wake)),
		tag(deployment.TagTTL, strconv.Itoa(req.TTLSeconds)))
	if choice := deployment.ChoiceTag(req); choice != "" {
		in.Tags = append(in.Tags, tag(deployment.TagChoice, choice))
	}
	if req.KeepRunning {
		in.Tags = append(in.Tags, tag(deployment.TagKeepRunning, "true"), tag(deployment.TagRestart, strconv.Itoa(req.Restart)),
			tag(deployment.TagAvoid, strings.Join(req.Avoid, deployment.AvoidSeparator)))
	}
	for _, pc := range cand.PlacementConstraints {
		in.PlacementConstraints = append(in.PlacementConstraints, ecstypes.PlacementConstraint{
			Type: ecstypes.PlacementConstraintType(pc.Type), Expression: aws.String(pc.Expression),
		})
	}
	switch {
	case len(cand.CapacityProviderStrategy) > 0:
		for _, s := range cand.CapacityProviderStrategy {
			in.CapacityProviderStrategy = append(in.CapacityProviderStrategy, ecstypes.CapacityProviderStrategyItem{
				CapacityProvider: aws.String(s.CapacityProvider), Weight: s.Weight,
			})
		}
	case cand.IsGPU() && r.Providers[cand.ProviderKey()] != "":
		in.CapacityProviderStrategy = []ecstypes.CapacityProviderStrategyItem{{
			CapacityProvider: aws.String(r.Providers[cand.ProviderKey()]), Weight: 1,
		}}
	default:
		in.LaunchType = ecstypes.LaunchType(cand.LaunchType)
	}
	return in
}

// ephemeralStorage sizes a Fargate task's storage for the image and the model; EC2 tasks use the instance's
// volume, and ECS refuses the override for them.
func ephemeralStorage(cand planner.Candidate) *ecstypes.EphemeralStorage {
	if cand.LaunchType != planner.LaunchTypeFargate || cand.EphemeralStorageGiB == 0 {
		return nil
	}
	return &ecstypes.EphemeralStorage{SizeInGiB: int32(cand.EphemeralStorageGiB)}
}

// tag values allow letters, digits, spaces and + - = . _ : / @; anything else becomes "_".
func tag(k, v string) ecstypes.Tag {
	clean := strings.Map(func(r rune) rune {
		if r < 128 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune(" +-=._:/@", r)) {
			return r
		}
		return '_'
	}, v)
	if len(clean) > 256 {
		clean = clean[:256]
	}
	return ecstypes.Tag{Key: aws.String(k), Value: aws.String(clean)}
}

func describeFailures(fs []ecstypes.Failure) string {
	parts := make([]string, 0, len(fs))
	for _, f := range fs {
		p := aws.ToString(f.Reason)
		if d := aws.ToString(f.Detail); d != "" {
			p += " (" + d + ")"
		}
		parts = append(parts, p)
	}
	return strings.Join(parts, "; ")
}
