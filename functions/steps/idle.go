package steps

import (
	"context"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

// autoStop decides at a deployment's auto-stop time: a deployment the load balancer saw requests for within the
// idle window is looked at again one window later (its schedule moves on), up to its maximum lifetime; an idle
// one, or one past its lifetime, is stopped (its tasks or service, its schedule and its route).
func (t *Teardown) autoStop(ctx context.Context, c *deployment.AutoStopCheck) (deployment.Stopped, error) {
	if c == nil || !events.ValidDeploymentID(c.DeploymentID) || c.Task == "" {
		return deployment.Stopped{}, &deployment.InvalidEventError{Reason: "an auto-stop check needs a deployment id and its task"}
	}
	now := time.Now()
	if t.Now != nil {
		now = t.Now()
	}
	decision := deployment.AutoStopDecision{DeploymentID: c.DeploymentID}
	stopBy, err := time.Parse(time.RFC3339, c.StopBy)
	if err != nil {
		stopBy = now
	}
	idle := time.Duration(c.IdleSeconds) * time.Second
	switch {
	case !now.Before(stopBy):
		decision.Why = "its maximum lifetime (" + c.StopBy + ") has passed"
	case t.Usage == nil || c.TargetGroup == "" || idle <= 0:
		decision.Why = "its time to live is up (no request metrics to look at)"
	default:
		use, err := t.Usage.Usage(ctx, c.TargetGroup, now.Add(-idle), now.Add(time.Minute))
		if err != nil {
			return deployment.Stopped{}, err
		}
		decision.Requests = use.Requests
		if !use.LastUse.IsZero() {
			decision.LastUse = use.LastUse.UTC().Format(time.RFC3339)
		}
		if use.Requests == 0 {
			decision.Why = fmt.Sprintf("no request in the last %s", idle)
			break
		}
		next := now.Add(idle).Add(time.Minute - time.Nanosecond).Truncate(time.Minute)
		if next.After(stopBy) {
			next = stopBy
		}
		if !next.After(now.Add(time.Minute)) {
			decision.Why = fmt.Sprintf("%d requests in the last %s, but its maximum lifetime (%s) is due", use.Requests, idle, c.StopBy)
			break
		}
		if err := t.reschedule(ctx, c.DeploymentID, next); err != nil {
			return deployment.Stopped{}, err
		}
		decision.Postponed, decision.NextCheck = true, next.UTC().Format(time.RFC3339)
		decision.Why = fmt.Sprintf("%d requests in the last %s", use.Requests, idle)
		deployment.Logger(t.Stopper.Log, c.DeploymentID).Info("auto-stop postponed", "requests", use.Requests, "nextCheck", decision.NextCheck)
		return deployment.Stopped{Deployments: []string{c.DeploymentID}, Tasks: []string{}, Schedules: []string{}, AutoStop: &decision}, nil
	}
	out, err := t.Stopper.StopExecution(ctx, c.DeploymentID, c.Execution, c.Task, c.Reason+": "+decision.Why, deployment.Sleep)
	out.AutoStop = &decision
	return out, err
}

// reschedule moves the deployment's auto-stop schedule to at (the whole schedule is replaced, as UpdateSchedule
// wants).
func (t *Teardown) reschedule(ctx context.Context, deploymentID string, at time.Time) error {
	s := t.Stopper
	name := deployment.ScheduleName(deploymentID)
	got, err := s.Scheduler.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(name), GroupName: aws.String(s.Group)})
	if err != nil {
		return deployment.AWSError("scheduler:GetSchedule", err)
	}
	_, err = s.Scheduler.UpdateSchedule(ctx, &scheduler.UpdateScheduleInput{
		Name: aws.String(name), GroupName: aws.String(s.Group),
		ScheduleExpression:         aws.String("at(" + at.UTC().Format("2006-01-02T15:04:05") + ")"),
		ScheduleExpressionTimezone: aws.String("UTC"),
		FlexibleTimeWindow:         got.FlexibleTimeWindow, Target: got.Target, Description: got.Description,
		ActionAfterCompletion: got.ActionAfterCompletion, State: got.State,
	})
	if err != nil {
		return deployment.AWSError("scheduler:UpdateSchedule", err)
	}
	return nil
}
