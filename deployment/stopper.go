package deployment

import (
	"context"
	"log/slog"
	"slices"
	"strings"

	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
)

// Stopped reports what a cleanup or teardown stopped and deleted.
type Stopped struct {
	// Deployments are the deployment ids acted on.
	Deployments []string `json:"deployments"`
	// Tasks are the task ARNs stopped.
	Tasks []string `json:"tasks"`
	// Schedules are the auto-stop schedules deleted.
	Schedules []string `json:"schedules"`
	// Services are the prod services deleted (their tasks drain and stop).
	Services []string `json:"services,omitempty"`
	// Sleeping says the deployment's endpoint was kept: a request to it wakes the deployment.
	Sleeping bool `json:"sleeping,omitempty"`
	// AutoStop is what an auto-stop schedule's check decided.
	AutoStop *AutoStopDecision `json:"autoStop,omitempty"`
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
	// Routes takes a deployment off the load balancer once none of its tasks is left (nil: a stack without one).
	Routes RouteRemover
	// Services deletes a prod deployment's service (nil: a stack without services).
	Services ServiceRemover
	Log      *slog.Logger
}

// ServiceRemover deletes a deployment's service and its scaling; with execution set, only the service that
// execution created (othersLeft reports another request's).
type ServiceRemover interface {
	Remove(ctx context.Context, deploymentID, execution string) (removed string, othersLeft bool, err error)
}

// RouteRemover deletes a deployment's rules, target group and API key (what is already gone is fine), or keeps
// them for a deployment that wakes on request (Sleep reports whether it did; last is one of its stopped tasks, nil
// when none ran; failed says the stop ends a failed start).
type RouteRemover interface {
	Remove(ctx context.Context, deploymentID string) error
	Sleep(ctx context.Context, deploymentID string, last *ecstypes.Task, reason string, failed bool) (bool, error)
	// ForgetSleeping removes every sleeping deployment's route (the stack's deletion).
	ForgetSleeping(ctx context.Context) ([]string, error)
}

// Ending is what a stop does with the deployment's endpoint.
type Ending int

const (
	// Sleep keeps the endpoint of a deployment that wakes on request (auto-stop, teardown, a stop request).
	Sleep Ending = iota
	// Forget removes it whatever the deployment is.
	Forget
	// Failed ends a failed start: a failed wake goes back to sleep, a failed first start is removed.
	Failed
)

// StopDeployment stops every task the deployment started and deletes its schedule. Already-gone things are fine:
// stopping is idempotent.
func (s *Stopper) StopDeployment(ctx context.Context, deploymentID, reason string, end Ending) (Stopped, error) {
	return s.stop(ctx, deploymentID, "", reason, end, func(ecstypes.Task) bool { return true }, func(string) bool { return true })
}

// StopExecution stops only what one execution of the state machine started: the tasks tagged with its name, and
// the deployment's schedule only when that schedule stops one of them (or knownTask, the task the state names).
// Another request with the same deployment id, and its task and schedule, are left alone.
func (s *Stopper) StopExecution(ctx context.Context, deploymentID, execution, knownTask, reason string, end Ending) (Stopped, error) {
	own := func(t ecstypes.Task) bool {
		arn := aws.ToString(t.TaskArn)
		return (execution != "" && TagValue(t.Tags, TagExecution) == execution) || (knownTask != "" && arn == knownTask)
	}
	var stopped []string
	ownsSchedule := func(target string) bool {
		return target != "" && (target == knownTask || slices.Contains(stopped, target))
	}
	return s.stop(ctx, deploymentID, execution, reason, end, func(t ecstypes.Task) bool {
		if own(t) {
			stopped = append(stopped, aws.ToString(t.TaskArn))
			return true
		}
		return false
	}, ownsSchedule)
}

// stop stops the deployment's tasks that pick accepts, then deletes its schedule if ownsSchedule accepts the task
// the schedule would stop.
func (s *Stopper) stop(ctx context.Context, deploymentID, execution, reason string, end Ending, pick func(ecstypes.Task) bool, ownsSchedule func(target string) bool) (Stopped, error) {
	res := Stopped{Deployments: []string{deploymentID}, Tasks: []string{}, Schedules: []string{}}
	othersLeft := false
	if s.Services != nil {
		removed, others, err := s.Services.Remove(ctx, deploymentID, execution)
		if err != nil {
			return res, err
		}
		if removed != "" {
			res.Services = append(res.Services, removed)
		}
		othersLeft = others
	}
	tasks, err := DeploymentTasks(ctx, s.ECS, s.Cluster, deploymentID)
	if err != nil {
		return res, err
	}
	var last *ecstypes.Task
	for _, t := range tasks {
		if !pick(t) {
			continue
		}
		if err := s.stopTask(ctx, aws.ToString(t.TaskArn), reason); err != nil {
			return res, err
		}
		res.Tasks = append(res.Tasks, aws.ToString(t.TaskArn))
		last = &t
	}
	deleted, err := s.DeleteSchedule(ctx, ScheduleName(deploymentID), ownsSchedule)
	if err != nil {
		return res, err
	}
	if deleted {
		res.Schedules = append(res.Schedules, ScheduleName(deploymentID))
	}
	if s.Routes != nil && len(res.Tasks) == len(tasks) && !othersLeft {
		// Nothing of the deployment runs any more (a stop never leaves another request's task without its route):
		// it sleeps (its endpoint wakes it) or goes.
		slept := false
		if end != Forget {
			if last == nil && s.Services != nil && len(res.Services) > 0 {
				last = s.lastServiceTask(ctx, deploymentID)
			}
			if slept, err = s.Routes.Sleep(ctx, deploymentID, last, reason, end == Failed); err != nil {
				return res, err
			}
		}
		if slept {
			res.Sleeping = true
		} else if err := s.Routes.Remove(ctx, deploymentID); err != nil {
			return res, err
		}
	}
	Logger(s.Log, deploymentID).Info("deployment stopped", "tasks", len(res.Tasks), "scheduleDeleted", deleted, "reason", reason)
	return res, nil
}

// DeploymentTasks lists the deployment's tasks that are not stopped and that this system started: startedBy the
// deployment id, with the managed-by and deployment-id tags, in the cluster.
func DeploymentTasks(ctx context.Context, ecsAPI TaskLister, cluster, deploymentID string) ([]ecstypes.Task, error) {
	tasks, err := ListTasks(ctx, ecsAPI, cluster, &ecs.ListTasksInput{Cluster: aws.String(cluster), StartedBy: aws.String(deploymentID)})
	if err != nil {
		return nil, err
	}
	tasks = Live(tasks)
	var out []ecstypes.Task
	for _, t := range tasks {
		if TagValue(t.Tags, TagDeploymentID) == deploymentID && TagValue(t.Tags, TagManagedBy) == ManagedByValue {
			out = append(out, t)
		}
	}
	return out, nil
}

// lastServiceTask is one of a deleted service's tasks, whose tags tell whether the deployment wakes (nil if none).
func (s *Stopper) lastServiceTask(ctx context.Context, deploymentID string) *ecstypes.Task {
	tasks, err := ListTasks(ctx, s.ECS, s.Cluster, &ecs.ListTasksInput{Cluster: aws.String(s.Cluster), ServiceName: aws.String(ServiceName(deploymentID))})
	if err != nil || len(tasks) == 0 {
		return nil
	}
	return &tasks[0]
}

// StopEnv stops every running deployment of an environment.
func (s *Stopper) StopEnv(ctx context.Context, env, reason string, end Ending) (Stopped, error) {
	all := Stopped{Deployments: []string{}, Tasks: []string{}, Schedules: []string{}}
	tasks, err := ListTasks(ctx, s.ECS, s.Cluster, &ecs.ListTasksInput{Cluster: aws.String(s.Cluster), DesiredStatus: ecstypes.DesiredStatusRunning})
	if err != nil {
		return all, err
	}
	tasks = Live(tasks)
	seen := map[string]bool{}
	for _, t := range tasks {
		id := TagValue(t.Tags, TagDeploymentID)
		// A deployment's own tasks are startedBy its id; a prod service's carry its tags and ECS's startedBy.
		startedBy := aws.ToString(t.StartedBy)
		if TagValue(t.Tags, TagManagedBy) != ManagedByValue || TagValue(t.Tags, TagEnv) != env ||
			id == "" || (startedBy != id && !strings.HasPrefix(startedBy, "ecs-svc/")) || seen[id] {
			continue
		}
		seen[id] = true
		one, err := s.StopDeployment(ctx, id, reason, end)
		if err != nil {
			return all, err
		}
		all.Deployments = append(all.Deployments, id)
		all.Tasks = append(all.Tasks, one.Tasks...)
		all.Schedules = append(all.Schedules, one.Schedules...)
		all.Services = append(all.Services, one.Services...)
	}
	return all, nil
}

// ListTasks pages through ListTasks and describes the tasks, with their tags. Tasks listed by desired status
// RUNNING may already have stopped by the time they are described: Live keeps those that have not.
func ListTasks(ctx context.Context, ecsAPI TaskLister, cluster string, in *ecs.ListTasksInput) ([]ecstypes.Task, error) {
	var arns []string
	for {
		out, err := ecsAPI.ListTasks(ctx, in)
		if err != nil {
			return nil, AWSError("ecs:ListTasks", err)
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
			return nil, AWSError("ecs:DescribeTasks", err)
		}
		tasks = append(tasks, out.Tasks...)
	}
	return tasks, nil
}

// Live keeps the tasks that have not stopped.
func Live(tasks []ecstypes.Task) []ecstypes.Task {
	var live []ecstypes.Task
	for _, t := range tasks {
		if aws.ToString(t.LastStatus) != "STOPPED" {
			live = append(live, t)
		}
	}
	return live
}

func (s *Stopper) stopTask(ctx context.Context, arn, reason string) error {
	_, err := s.ECS.StopTask(ctx, &ecs.StopTaskInput{Cluster: aws.String(s.Cluster), Task: aws.String(arn), Reason: aws.String(reason)})
	if err != nil && !IsNotFound(err) {
		return AWSError("ecs:StopTask", err)
	}
	return nil
}

// deleteSchedule deletes the named schedule if owns accepts the task it stops.
func (s *Stopper) DeleteSchedule(ctx context.Context, name string, owns func(target string) bool) (bool, error) {
	got, err := s.Scheduler.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(name), GroupName: aws.String(s.Group)})
	if IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, AWSError("scheduler:GetSchedule", err)
	}
	if !owns(ScheduleTarget(got)) {
		return false, nil
	}
	_, err = s.Scheduler.DeleteSchedule(ctx, &scheduler.DeleteScheduleInput{Name: aws.String(name), GroupName: aws.String(s.Group)})
	if err == nil {
		return true, nil
	}
	if IsNotFound(err) {
		return false, nil
	}
	return false, AWSError("scheduler:DeleteSchedule", err)
}
