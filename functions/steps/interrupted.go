package steps

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

// Interrupted handles an ECS Task State Change of a deployment's task that stopped on its own after the
// deployment was ready: a Spot interruption, an out-of-memory kill, a crash. Stops this system asked for
// (UserInitiated: stop requests, the teardown, auto-stop, clean-up) and tasks whose deployment is still starting
// (its execution handles them) are left alone. It deletes the auto-stop schedule that would stop the dead task,
// and, when the request asked to be kept running, starts the deployment again under the same id, avoiding the
// placement the task died on. The stopped task, with its stop code, is what `list` shows as interrupted.
type Interrupted struct {
	Stopper *deployment.Stopper
	// Tags marks the stopped task as interrupted, which is how `list` tells an interruption from a stop.
	Tags deployment.TaskTagger
	// Executions reads the execution that started the task and starts the restart; StateMachineArn is the deploy
	// state machine.
	Executions      deployment.Executions
	StateMachineArn string
	Now             func() time.Time
}

func (h *Interrupted) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

func (h *Interrupted) Handle(ctx context.Context, ev *events.TaskStateChange) (deployment.InterruptedResult, error) {
	res := deployment.InterruptedResult{TaskArn: ev.TaskArn, StopCode: ev.StopCode}
	switch {
	case ev.LastStatus != "STOPPED":
		res.Ignored = "the task is " + ev.LastStatus + ", not stopped"
		return res, nil
	case ev.StopCode == string(ecstypes.TaskStopCodeUserInitiated):
		res.Ignored = "stopped on request"
		return res, nil
	case !events.ValidDeploymentID(ev.StartedBy):
		res.Ignored = "not started by a deployment"
		return res, nil
	}
	s := h.Stopper
	out, err := s.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(s.Cluster), Tasks: []string{ev.TaskArn},
		Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if err != nil {
		return res, deployment.AWSError("ecs:DescribeTasks", err)
	}
	if len(out.Tasks) == 0 {
		res.Ignored = "the task is no longer known to ECS"
		return res, nil
	}
	task := out.Tasks[0]
	id := ev.StartedBy
	if deployment.TagValue(task.Tags, deployment.TagManagedBy) != deployment.ManagedByValue || deployment.TagValue(task.Tags, deployment.TagDeploymentID) != id {
		res.Ignored = "not a task of this system"
		return res, nil
	}
	res.DeploymentID = id
	log := deployment.Logger(s.Log, id)
	// A task that dies while its deployment starts is its execution's business (health sees it, Clean up runs).
	if name := deployment.TagValue(task.Tags, deployment.TagExecution); name != "" {
		x, err := h.Executions.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(executionArn(h.StateMachineArn, name))})
		if err != nil && !deployment.IsCode(err, "ExecutionDoesNotExist") {
			return res, deployment.AWSError("states:DescribeExecution", err)
		}
		if err == nil && x.Status != sfntypes.ExecutionStatusSucceeded {
			res.Ignored = "its deployment did not become ready (execution " + string(x.Status) + ")"
			return res, nil
		}
	}
	// The auto-stop schedule of the dead task: its remaining time carries over to a restart.
	remaining := time.Duration(-1)
	got, err := s.Scheduler.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(deployment.ScheduleName(id)), GroupName: aws.String(s.Group)})
	switch {
	case deployment.IsNotFound(err):
	case err != nil:
		return res, deployment.AWSError("scheduler:GetSchedule", err)
	case deployment.ScheduleTarget(got) == ev.TaskArn:
		if at, perr := time.Parse("at(2006-01-02T15:04:05)", aws.ToString(got.ScheduleExpression)); perr == nil {
			remaining = at.Sub(h.now())
		}
		deleted, err := s.DeleteSchedule(ctx, deployment.ScheduleName(id), func(string) bool { return true })
		if err != nil {
			return res, err
		}
		if deleted {
			res.ScheduleDeleted = deployment.ScheduleName(id)
		}
	}
	log.Warn("deployment interrupted", "taskArn", ev.TaskArn, "stopCode", ev.StopCode, "reason", ev.StoppedReason,
		"scheduleDeleted", res.ScheduleDeleted)
	// The mark `list` shows comes last and is best effort: it must never stand between a deployment and its restart.
	defer func() {
		if _, err := h.Tags.TagResource(ctx, &ecs.TagResourceInput{ResourceArn: aws.String(ev.TaskArn),
			Tags: []ecstypes.Tag{tag(deployment.TagInterrupted, cmp.Or(ev.StopCode, "unknown"))}}); err != nil {
			log.Warn("marking the stopped task interrupted", "taskArn", ev.TaskArn, "error", err)
		}
	}()
	live, err := deployment.DeploymentTasks(ctx, s.ECS, s.Cluster, id)
	if err != nil {
		return res, err
	}
	if deployment.TagValue(task.Tags, deployment.TagKeepRunning) != "true" {
		// Not to be restarted: once nothing of the deployment runs, it sleeps (a request wakes it) or its route goes.
		if len(live) == 0 && s.Routes != nil {
			slept, err := s.Routes.Sleep(ctx, id, &task, "interrupted ("+cmp.Or(ev.StopCode, "unknown")+")", false)
			if err != nil {
				return res, err
			}
			if !slept {
				if err := s.Routes.Remove(ctx, id); err != nil {
					return res, err
				}
			}
		}
		return res, nil
	}
	if len(live) > 0 {
		res.Ignored = "the deployment has a live task already"
		return res, nil
	}
	req, why := restartRequest(task, id, ev.StopCode, remaining)
	if why != "" {
		res.Ignored = "no restart: " + why
		log.Warn("deployment not restarted", "why", why)
		return res, nil
	}
	input, _ := json.Marshal(req)
	// Named after the dead task: a second delivery of its event starts nothing new (same name, same input), and no
	// other deployment's execution, or an earlier life of this id, can hold the name.
	taskID := ev.TaskArn[strings.LastIndex(ev.TaskArn, "/")+1:]
	name := fmt.Sprintf("%s-r%d-%s", id, req.Restart, taskID[:min(8, len(taskID))])
	started, err := h.Executions.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(h.StateMachineArn),
		Name: aws.String(name), Input: aws.String(string(input))})
	if err != nil && !deployment.IsCode(err, "ExecutionAlreadyExists") {
		return res, deployment.AWSError("states:StartExecution", err)
	}
	res.Restarted = executionArn(h.StateMachineArn, name)
	if started != nil {
		res.Restarted = aws.ToString(started.ExecutionArn)
	}
	log.Info("deployment restarted", "execution", res.Restarted, "avoid", req.Avoid)
	return res, nil
}

// restartRequest rebuilds a kept-running deployment's request from its dead task: the model and source from the
// container's overrides, the rest from the tags, and the time to live that was left. A placement that ran out of
// capacity (a Spot interruption) is added to those to avoid, so the restart goes to the next candidate; after a
// crash or an out-of-memory kill the same placements stay open. why says when there is to be no restart.
func restartRequest(task ecstypes.Task, id, stopCode string, remaining time.Duration) (req events.DeployRequest, why string) {
	restart, _ := strconv.Atoi(deployment.TagValue(task.Tags, deployment.TagRestart))
	if restart >= events.MaxRestarts {
		return req, fmt.Sprintf("restarted %d times already", restart)
	}
	req = requestFromTask(task, id)
	req.KeepRunning, req.Restart, req.Wake = true, restart+1, 0
	if a := deployment.TagValue(task.Tags, deployment.TagAvoid); a != "" {
		req.Avoid = strings.Split(a, deployment.AvoidSeparator)
	}
	if placement := deployment.TagValue(task.Tags, deployment.TagPlacement); lostCapacity(placement, stopCode) {
		req.Avoid = append(req.Avoid, placement)
	}
	switch {
	case remaining < 0:
		req.TTL = "0" // it had no auto-stop
	case remaining < time.Minute:
		return req, "its auto-stop was due within a minute"
	default:
		req.TTL = remaining.Round(time.Minute).String()
	}
	if err := req.Validate(); err != nil {
		return req, err.Error()
	}
	return req, ""
}

// lostCapacity reports a task that stopped because its Spot capacity was reclaimed: stop code SpotInterruption
// (Fargate Spot), or an EC2 Spot placement whose task stopped for anything but its own exit (a crash, an
// out-of-memory kill) or a person: the instance under it was terminated, whatever code ECS gives a lost host.
func lostCapacity(placement, stopCode string) bool {
	switch {
	case stopCode == string(ecstypes.TaskStopCodeSpotInterruption):
		return true
	case strings.HasPrefix(placement, "EC2 Spot "):
		return stopCode != string(ecstypes.TaskStopCodeEssentialContainerExited) && stopCode != string(ecstypes.TaskStopCodeUserInitiated)
	}
	return false
}

// requestFromTask rebuilds a deployment's request from one of its tasks: the model and source from the
// container's overrides (the model tag when there are none), the rest from the tags, including how it chose its
// placement; the time to live is the one requested.
func requestFromTask(task ecstypes.Task, id string) events.DeployRequest {
	env := map[string]string{}
	if task.Overrides != nil {
		for _, c := range task.Overrides.ContainerOverrides {
			if aws.ToString(c.Name) != deployment.ContainerName {
				continue
			}
			for _, kv := range c.Environment {
				env[aws.ToString(kv.Name)] = aws.ToString(kv.Value)
			}
		}
	}
	req := events.DeployRequest{Model: cmp.Or(env[deployment.EnvModel], deployment.TagValue(task.Tags, deployment.TagModel)),
		Env: deployment.TagValue(task.Tags, deployment.TagEnv), DeploymentID: id, Requester: deployment.TagValue(task.Tags, deployment.TagRequester)}
	if src := env[deployment.EnvSource]; strings.HasPrefix(src, "s3://") {
		req.Source = src
	}
	if n, err := strconv.Atoi(env[deployment.EnvContextLength]); err == nil {
		req.ContextLength = n
	}
	if req.Requester == "unknown" {
		req.Requester = ""
	}
	if ttl, err := strconv.Atoi(deployment.TagValue(task.Tags, deployment.TagTTL)); err == nil && ttl >= 0 {
		req.TTL = (time.Duration(ttl) * time.Second).String()
		if ttl == 0 {
			req.TTL = "0"
		}
	}
	if deployment.TagValue(task.Tags, deployment.TagKeepRunning) == "true" {
		req.KeepRunning = true
	}
	if n, err := strconv.Atoi(deployment.TagValue(task.Tags, deployment.TagWakeCount)); err == nil {
		req.Wake = n
	}
	wake := deployment.TagValue(task.Tags, deployment.TagWake) == "true"
	req.WakeOnRequest = &wake
	deployment.ApplyChoice(&req, deployment.TagValue(task.Tags, deployment.TagChoice))
	return req
}

// executionArn is the ARN of a named execution of a state machine.
func executionArn(stateMachineArn, name string) string {
	return strings.Replace(stateMachineArn, ":stateMachine:", ":execution:", 1) + ":" + name
}
