package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"

	"github.com/aws/aws-lambda-go/cfn"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"

	"github.com/ollama-ecs/ollama-ecs/events"
)

// Stopped reports what a cleanup or teardown stopped and deleted.
type Stopped struct {
	// Deployments are the deployment ids acted on.
	Deployments []string `json:"deployments"`
	// Tasks are the task ARNs stopped.
	Tasks []string `json:"tasks"`
	// Schedules are the auto-stop schedules deleted.
	Schedules []string `json:"schedules"`
	// Interrupted is what was done about a task that stopped on its own (an ECS Task State Change).
	Interrupted *InterruptedResult `json:"interrupted,omitempty"`
}

// Stopper stops deployments: their tasks (only tasks this system started: managed-by tag and startedBy equal to
// the deployment id, in its cluster) and their auto-stop schedules. Cleanup and teardown share it.
type Stopper struct {
	ECS       TaskStopper
	Scheduler Schedules
	Cluster   string
	Group     string
	Log       *slog.Logger
}

// StopDeployment stops every task the deployment started and deletes its schedule. Already-gone things are fine:
// stopping is idempotent.
func (s *Stopper) StopDeployment(ctx context.Context, deploymentID, reason string) (Stopped, error) {
	return s.stop(ctx, deploymentID, reason, func(ecstypes.Task) bool { return true }, func(string) bool { return true })
}

// StopExecution stops only what one execution of the state machine started: the tasks tagged with its name, and
// the deployment's schedule only when that schedule stops one of them (or knownTask, the task the state names).
// Another request with the same deployment id, and its task and schedule, are left alone.
func (s *Stopper) StopExecution(ctx context.Context, deploymentID, execution, knownTask, reason string) (Stopped, error) {
	own := func(t ecstypes.Task) bool {
		arn := aws.ToString(t.TaskArn)
		return (execution != "" && TagValue(t.Tags, TagExecution) == execution) || (knownTask != "" && arn == knownTask)
	}
	var stopped []string
	ownsSchedule := func(target string) bool {
		return target != "" && (target == knownTask || slices.Contains(stopped, target))
	}
	return s.stop(ctx, deploymentID, reason, func(t ecstypes.Task) bool {
		if own(t) {
			stopped = append(stopped, aws.ToString(t.TaskArn))
			return true
		}
		return false
	}, ownsSchedule)
}

// stop stops the deployment's tasks that pick accepts, then deletes its schedule if ownsSchedule accepts the task
// the schedule would stop.
func (s *Stopper) stop(ctx context.Context, deploymentID, reason string, pick func(ecstypes.Task) bool, ownsSchedule func(target string) bool) (Stopped, error) {
	res := Stopped{Deployments: []string{deploymentID}, Tasks: []string{}, Schedules: []string{}}
	tasks, err := DeploymentTasks(ctx, s.ECS, s.Cluster, deploymentID)
	if err != nil {
		return res, err
	}
	for _, t := range tasks {
		if !pick(t) {
			continue
		}
		if err := s.stopTask(ctx, aws.ToString(t.TaskArn), reason); err != nil {
			return res, err
		}
		res.Tasks = append(res.Tasks, aws.ToString(t.TaskArn))
	}
	deleted, err := s.deleteSchedule(ctx, ScheduleName(deploymentID), ownsSchedule)
	if err != nil {
		return res, err
	}
	if deleted {
		res.Schedules = append(res.Schedules, ScheduleName(deploymentID))
	}
	logger(s.Log, deploymentID).Info("deployment stopped", "tasks", len(res.Tasks), "scheduleDeleted", deleted, "reason", reason)
	return res, nil
}

// DeploymentTasks lists the deployment's tasks that are not stopped and that this system started: startedBy the
// deployment id, with the managed-by and deployment-id tags, in the cluster.
func DeploymentTasks(ctx context.Context, ecsAPI TaskLister, cluster, deploymentID string) ([]ecstypes.Task, error) {
	tasks, err := ListTasks(ctx, ecsAPI, cluster, &ecs.ListTasksInput{Cluster: aws.String(cluster), StartedBy: aws.String(deploymentID)})
	if err != nil {
		return nil, err
	}
	var out []ecstypes.Task
	for _, t := range tasks {
		if TagValue(t.Tags, TagDeploymentID) == deploymentID && TagValue(t.Tags, TagManagedBy) == ManagedByValue {
			out = append(out, t)
		}
	}
	return out, nil
}

// StopEnv stops every running deployment of an environment.
func (s *Stopper) StopEnv(ctx context.Context, env, reason string) (Stopped, error) {
	all := Stopped{Deployments: []string{}, Tasks: []string{}, Schedules: []string{}}
	tasks, err := ListTasks(ctx, s.ECS, s.Cluster, &ecs.ListTasksInput{Cluster: aws.String(s.Cluster), DesiredStatus: ecstypes.DesiredStatusRunning})
	if err != nil {
		return all, err
	}
	seen := map[string]bool{}
	for _, t := range tasks {
		id := TagValue(t.Tags, TagDeploymentID)
		if TagValue(t.Tags, TagManagedBy) != ManagedByValue || TagValue(t.Tags, TagEnv) != env ||
			id == "" || aws.ToString(t.StartedBy) != id || seen[id] {
			continue
		}
		seen[id] = true
		one, err := s.StopDeployment(ctx, id, reason)
		if err != nil {
			return all, err
		}
		all.Deployments = append(all.Deployments, id)
		all.Tasks = append(all.Tasks, one.Tasks...)
		all.Schedules = append(all.Schedules, one.Schedules...)
	}
	return all, nil
}

// ListTasks pages through ListTasks and describes the tasks that are not stopped, with their tags.
func ListTasks(ctx context.Context, ecsAPI TaskLister, cluster string, in *ecs.ListTasksInput) ([]ecstypes.Task, error) {
	var arns []string
	for {
		out, err := ecsAPI.ListTasks(ctx, in)
		if err != nil {
			return nil, awsError("ecs:ListTasks", err)
		}
		arns = append(arns, out.TaskArns...)
		if out.NextToken == nil {
			break
		}
		in.NextToken = out.NextToken
	}
	var tasks []ecstypes.Task
	for start := 0; start < len(arns); start += 100 {
		out, err := ecsAPI.DescribeTasks(ctx, &ecs.DescribeTasksInput{
			Cluster: aws.String(cluster), Tasks: arns[start:min(start+100, len(arns))],
			Include: []ecstypes.TaskField{ecstypes.TaskFieldTags},
		})
		if err != nil {
			return nil, awsError("ecs:DescribeTasks", err)
		}
		for _, t := range out.Tasks {
			if aws.ToString(t.LastStatus) != "STOPPED" {
				tasks = append(tasks, t)
			}
		}
	}
	return tasks, nil
}

func (s *Stopper) stopTask(ctx context.Context, arn, reason string) error {
	_, err := s.ECS.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(s.Cluster), Task: aws.String(arn), Reason: aws.String(reason)})
	if err != nil && !isNotFound(err) {
		return awsError("ecs:StopTask", err)
	}
	return nil
}

// deleteSchedule deletes the named schedule if owns accepts the task it stops.
func (s *Stopper) deleteSchedule(ctx context.Context, name string, owns func(target string) bool) (bool, error) {
	got, err := s.Scheduler.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(name), GroupName: aws.String(s.Group)})
	if isNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, awsError("scheduler:GetSchedule", err)
	}
	if !owns(scheduleTarget(got)) {
		return false, nil
	}
	_, err = s.Scheduler.DeleteSchedule(ctx, &scheduler.DeleteScheduleInput{Name: aws.String(name), GroupName: aws.String(s.Group)})
	if err == nil {
		return true, nil
	}
	if isNotFound(err) {
		return false, nil
	}
	return false, awsError("scheduler:DeleteSchedule", err)
}

// Cleanup runs after any failure once a task may have started: it stops the tasks its own execution started and
// deletes the schedule that would stop them, so nothing is left running or scheduled, and the state machine then
// fails with the original error. A task or schedule another request made under the same deployment id is never
// touched.
type Cleanup struct{ Stopper *Stopper }

func (c *Cleanup) Handle(ctx context.Context, s State) (Stopped, error) {
	if s.Request == nil {
		return Stopped{}, &IncompleteStateError{Step: "Clean up", Missing: "a request"}
	}
	reason := "ollama-ecs cleanup after a failed deployment"
	switch {
	case s.Error != nil:
		reason += ": " + s.Error.Error
	case s.Capacity != nil && s.Capacity.LastError != nil:
		// "Release placement": the candidate was refused after its task started; the ladder goes on.
		reason = "ollama-ecs releases a refused placement: " + s.Capacity.LastError.Error
	}
	known := ""
	if s.Task != nil {
		known = s.Task.TaskArn
	}
	return c.Stopper.StopExecution(ctx, s.Request.DeploymentID, s.Request.ExecutionName, known, reason)
}

// StackResourceID is the physical id of the stack's stop-on-delete custom resource.
const StackResourceID = "ollama-ecs-stop-deployments-on-delete"

// stackEvent answers the stack's custom resource (CloudFormation invokes the function directly and waits for the
// answer at the event's ResponseURL). Its deletion, which comes before the capacity providers' and groups', stops
// every deployment: a running standalone task would hold its instance's termination (managed draining) and the
// stack's deletion with it.
func (t *Teardown) stackEvent(ctx context.Context, raw TeardownInput) (Stopped, error) {
	var ev cfn.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return Stopped{}, &InvalidEventError{Reason: "a CloudFormation custom resource event: " + err.Error()}
	}
	var out Stopped
	reason, err := cfn.LambdaWrap(func(ctx context.Context, ev cfn.Event) (string, map[string]interface{}, error) {
		if ev.RequestType != cfn.RequestDelete {
			return StackResourceID, nil, nil
		}
		dev, err := t.Stopper.StopEnv(ctx, "dev", "ollama-ecs stack deleted")
		if err != nil {
			return StackResourceID, nil, err
		}
		prod, err := t.Stopper.StopEnv(ctx, "prod", "ollama-ecs stack deleted")
		out = Stopped{Deployments: append(dev.Deployments, prod.Deployments...), Tasks: append(dev.Tasks, prod.Tasks...),
			Schedules: append(dev.Schedules, prod.Schedules...)}
		return StackResourceID, nil, err
	})(ctx, ev)
	if err != nil {
		// The answer could not be sent: CloudFormation would wait an hour for it. Lambda retries a failed
		// asynchronous invocation.
		return out, &AWSServiceError{Op: "cloudformation:response", Code: "ResponseNotSent", Message: reason}
	}
	return out, nil
}

// TeardownInput is what the teardown function receives: a Scheduled Event (stop every dev deployment), a Stop
// Request from the bus, or a direct {"deploymentId": ...} or {"env": ...}.
type TeardownInput = json.RawMessage

// Teardown stops deployments on request: all dev deployments on the schedule, one deployment on a stop request;
// and it hears the cluster's stopped tasks (ECS Task State Change) to notice a deployment that died on its own.
type Teardown struct {
	Stopper *Stopper
	// Interrupted handles task state changes; nil refuses them.
	Interrupted *Interrupted
}

func (t *Teardown) Handle(ctx context.Context, raw TeardownInput) (Stopped, error) {
	var stack struct{ RequestType, ResponseURL string }
	if json.Unmarshal(raw, &stack) == nil && stack.RequestType != "" && stack.ResponseURL != "" {
		return t.stackEvent(ctx, raw)
	}
	var direct struct {
		DeploymentID string `json:"deploymentId"`
		Env          string `json:"env"`
	}
	if err := json.Unmarshal(raw, &direct); err == nil && (direct.DeploymentID != "" || direct.Env != "") {
		if direct.DeploymentID != "" {
			if !events.ValidDeploymentID(direct.DeploymentID) {
				return Stopped{}, &InvalidEventError{Reason: fmt.Sprintf("%q is not a deployment id", direct.DeploymentID)}
			}
			return t.Stopper.StopDeployment(ctx, direct.DeploymentID, "ollama-ecs stop request")
		}
		if direct.Env != "dev" && direct.Env != "prod" {
			return Stopped{}, &InvalidEventError{Reason: fmt.Sprintf("env %q is not dev or prod", direct.Env)}
		}
		return t.Stopper.StopEnv(ctx, direct.Env, "ollama-ecs teardown of env "+direct.Env)
	}
	in, err := events.Parse(raw, events.Config{}, "")
	if err != nil {
		return Stopped{}, &InvalidEventError{Reason: err.Error()}
	}
	switch in.Kind {
	case events.KindTeardown:
		return t.Stopper.StopEnv(ctx, "dev", "ollama-ecs scheduled dev teardown")
	case events.KindTaskStopped:
		if t.Interrupted == nil {
			return Stopped{}, &InvalidEventError{Reason: "this function is not configured for task state changes"}
		}
		res, err := t.Interrupted.Handle(ctx, in.TaskStopped)
		out := Stopped{Deployments: []string{}, Tasks: []string{}, Schedules: []string{}, Interrupted: &res}
		if res.ScheduleDeleted != "" {
			out.Schedules = append(out.Schedules, res.ScheduleDeleted)
		}
		return out, err
	case events.KindStop:
		reason := "ollama-ecs stop request"
		if in.Stop.Requester != "" {
			reason += " from " + in.Stop.Requester
		}
		return t.Stopper.StopDeployment(ctx, in.DeploymentID, reason)
	}
	return Stopped{}, &InvalidEventError{Reason: fmt.Sprintf("a %s event is not a stop or teardown", in.Kind)}
}
