package steps

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	schedtypes "github.com/aws/aws-sdk-go-v2/service/scheduler/types"
	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// AutoStop creates a one-time schedule, named after the deployment, that hands the deployment to the stop function
// (StopFunctionArn, the teardown function) when its time to live is up. That function stops it if it was idle over
// the last IdleWindow, and otherwise moves the schedule on by one window, up to MaxLifetime from the start (see
// AutoStopCheck); the schedule is deleted with the deployment.
type AutoStop struct {
	Scheduler deployment.Schedules
	// StopFunctionArn is the schedule's target; IdleWindow and MaxLifetime go into its payload.
	StopFunctionArn         string
	IdleWindow, MaxLifetime time.Duration
	// ECS is asked, once the schedule exists, whether the task is still wanted: a stop that landed between the
	// last health poll and this step would otherwise leave a schedule and a successful record behind.
	ECS     deployment.TaskDescriber
	Cluster string
	Group   string
	RoleArn string
	Now     func() time.Time
	Log     *slog.Logger
}

func (a *AutoStop) Handle(ctx context.Context, s deployment.State) (deployment.AutoStopResult, error) {
	if s.Request == nil || s.Task == nil || s.Plan == nil {
		return deployment.AutoStopResult{}, &deployment.IncompleteStateError{Step: "Schedule auto-stop", Missing: "its task"}
	}
	now := time.Now
	if a.Now != nil {
		now = a.Now
	}
	ttl := time.Duration(s.Plan.AutoStopSeconds) * time.Second
	// The scheduler has one-minute precision: round up, so a deployment never stops early.
	at := now().UTC().Add(ttl).Add(time.Minute - time.Nanosecond).Truncate(time.Minute)
	name := deployment.ScheduleName(s.Request.DeploymentID)
	watched := cmp.Or(s.Task.ServiceArn, s.Task.TaskArn)
	check := &deployment.AutoStopCheck{DeploymentID: s.Request.DeploymentID, Execution: s.Request.ExecutionName, Task: watched,
		// One-minute precision, as the schedule's: the last check is at or after the lifetime, never just before.
		IdleSeconds: int(a.IdleWindow.Seconds()), StopBy: now().UTC().Add(max(a.MaxLifetime, ttl)).Add(time.Minute - time.Nanosecond).Truncate(time.Minute).Format(time.RFC3339),
		Reason: fmt.Sprintf("ollama-ecs auto-stop after %s", ttl)}
	if s.Task.Route != nil {
		check.TargetGroup = s.Task.Route.TargetGroupArn
	}
	payload, _ := json.Marshal(deployment.AutoStopPayload{AutoStop: check})
	create := func() error {
		_, err := a.Scheduler.CreateSchedule(ctx, &scheduler.CreateScheduleInput{
			Name:                       aws.String(name),
			GroupName:                  aws.String(a.Group),
			ScheduleExpression:         aws.String("at(" + at.Format("2006-01-02T15:04:05") + ")"),
			ScheduleExpressionTimezone: aws.String("UTC"),
			FlexibleTimeWindow:         &schedtypes.FlexibleTimeWindow{Mode: schedtypes.FlexibleTimeWindowModeOff},
			// The stop function deletes the schedule with the deployment, or moves it on when the deployment is in use.
			ActionAfterCompletion: schedtypes.ActionAfterCompletionNone,
			Description:           aws.String("auto-stop of ollama-ecs deployment " + s.Request.DeploymentID),
			Target: &schedtypes.Target{
				Arn: aws.String(a.StopFunctionArn), RoleArn: aws.String(a.RoleArn), Input: aws.String(string(payload)),
				RetryPolicy: &schedtypes.RetryPolicy{MaximumRetryAttempts: aws.Int32(10)},
			},
		})
		return err
	}
	err := create()
	var conflict *schedtypes.ConflictException
	if errors.As(err, &conflict) || deployment.IsCode(err, "ConflictException") {
		got, gerr := a.Scheduler.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(name), GroupName: aws.String(a.Group)})
		if gerr != nil {
			return deployment.AutoStopResult{}, deployment.AWSError("scheduler:GetSchedule", gerr)
		}
		if deployment.ScheduleTarget(got) == watched {
			// A retried step: the schedule is already there. Report the time it actually has.
			if t, perr := time.Parse("at(2006-01-02T15:04:05)", aws.ToString(got.ScheduleExpression)); perr == nil {
				at = t
			}
			err = nil
		} else {
			// A schedule of another task of this id. If that task still runs, the schedule is another request's:
			// leave it (Clean up then stops only this execution's task). If it is gone, the schedule would stop
			// nothing: replace it.
			if target := deployment.ScheduleTarget(got); target != "" && s.Task.ServiceArn == "" {
				live, lerr := a.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(a.Cluster), Tasks: []string{target}})
				if lerr != nil {
					return deployment.AutoStopResult{}, deployment.AWSError("ecs:DescribeTasks", lerr)
				}
				if len(live.Tasks) > 0 && aws.ToString(live.Tasks[0].DesiredStatus) != "STOPPED" {
					return deployment.AutoStopResult{}, &deployment.DeploymentExistsError{DeploymentID: s.Request.DeploymentID, Tasks: []string{target},
						Reason: "another request's running task holds the auto-stop schedule"}
				}
			}
			if _, derr := a.Scheduler.DeleteSchedule(ctx, &scheduler.DeleteScheduleInput{Name: aws.String(name), GroupName: aws.String(a.Group)}); derr != nil && !deployment.IsNotFound(derr) {
				return deployment.AutoStopResult{}, deployment.AWSError("scheduler:DeleteSchedule", derr)
			}
			err = create()
		}
	}
	if err != nil {
		return deployment.AutoStopResult{}, deployment.AWSError("scheduler:CreateSchedule", err)
	}
	if s.Task.ServiceArn != "" {
		res := deployment.AutoStopResult{ScheduleName: name, StopAt: at.Format(time.RFC3339)}
		deployment.Logger(a.Log, s.Request.DeploymentID).Info("auto-stop scheduled", "schedule", name, "stopAt", res.StopAt)
		return res, nil
	}
	out, err := a.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(a.Cluster), Tasks: []string{s.Task.TaskArn}})
	if err != nil {
		return deployment.AutoStopResult{}, deployment.AWSError("ecs:DescribeTasks", err)
	}
	if len(out.Tasks) == 0 || aws.ToString(out.Tasks[0].DesiredStatus) == "STOPPED" {
		// Clean up (next) deletes the schedule just made.
		e := &deployment.TaskStoppedError{TaskArn: s.Task.TaskArn, StopCode: "Missing", Reason: "the task is no longer known to ECS"}
		if len(out.Tasks) > 0 {
			e.StopCode, e.Reason = string(out.Tasks[0].StopCode), aws.ToString(out.Tasks[0].StoppedReason)
		}
		return deployment.AutoStopResult{}, e
	}
	res := deployment.AutoStopResult{ScheduleName: name, StopAt: at.Format(time.RFC3339)}
	deployment.Logger(a.Log, s.Request.DeploymentID).Info("auto-stop scheduled", "schedule", name, "stopAt", res.StopAt)
	return res, nil
}
