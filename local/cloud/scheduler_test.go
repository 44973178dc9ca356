package cloud

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	schedtypes "github.com/aws/aws-sdk-go-v2/service/scheduler/types"
	"github.com/aws/smithy-go"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

func apiCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

// TestAutoStopFires runs the real auto-stop step against the local scheduler at 600x: a one-minute TTL (rounded
// up to the next minute, so up to two minutes of schedule time) hands the deployment to the real stop function
// within a fraction of a second, which (with no request metrics to look at) stops the task and deletes the
// schedule.
func TestAutoStopFires(t *testing.T) {
	e, _ := newTestECS(t, Config{})
	const stopFn = testStopFn
	var teardown *steps.Teardown
	sched := NewScheduler(SchedulerOptions{TimeScale: 600, Log: quiet, Invoke: func(ctx context.Context, _ string, target schedtypes.Target) error {
		if aws.ToString(target.Arn) != stopFn {
			return errors.New("unknown target " + aws.ToString(target.Arn))
		}
		_, err := teardown.Handle(ctx, json.RawMessage(aws.ToString(target.Input)))
		return err
	}})
	defer sched.Close()
	teardown = &steps.Teardown{Stopper: &deployment.Stopper{ECS: e, Scheduler: sched, Cluster: "ollama-ecs", Group: "ollama-ecs"}, Now: sched.Now}
	ctx := context.Background()
	in := gpuRun("dep-ttl", 1024, 1024, 0, "")
	in.Tags = append(in.Tags, ecstypesTag(deployment.TagManagedBy, deployment.ManagedByValue), ecstypesTag(deployment.TagDeploymentID, "dep-ttl"))
	out, err := e.RunTask(ctx, in)
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("RunTask: %v %+v", err, out)
	}
	arn := aws.ToString(out.Tasks[0].TaskArn)
	h := &steps.AutoStop{Scheduler: sched, ECS: e, Cluster: "ollama-ecs", Group: "ollama-ecs", RoleArn: "arn:aws:iam::111122223333:role/s",
		StopFunctionArn: stopFn, IdleWindow: 30 * time.Minute, MaxLifetime: 12 * time.Hour, Now: sched.Now}
	state := deployment.State{Request: &deployment.Request{DeploymentID: "dep-ttl"}, Task: &deployment.TaskInfo{TaskArn: arn}, Plan: &planner.Plan{AutoStopSeconds: 60}}
	res, err := h.Handle(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	stopAt, _ := time.Parse(time.RFC3339, res.StopAt)
	if _, err := sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(res.ScheduleName), GroupName: aws.String("ollama-ecs")}); err != nil {
		t.Fatalf("GetSchedule before firing: %v", err)
	}
	// A retried step meets the existing schedule and reports its time.
	if again, err := h.Handle(ctx, state); err != nil || again != res {
		t.Fatalf("retried AutoStop = %+v, %v; want %+v", again, err, res)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	task, err := e.WaitStatus(waitCtx, arn, StatusStopped)
	if err != nil {
		t.Fatal(err)
	}
	if task.StopCode != "UserInitiated" || !strings.HasPrefix(aws.ToString(task.StoppedReason), "ollama-ecs auto-stop after 1m0s: ") {
		t.Errorf("stopped with %s %q", task.StopCode, aws.ToString(task.StoppedReason))
	}
	fired := sched.Fired()
	if len(fired) != 1 || fired[0].Err != nil || fired[0].TargetArn != stopFn {
		t.Fatalf("fired: %+v", fired)
	}
	if late := fired[0].FiredAt.Sub(stopAt); late < 0 || late > 30*time.Second {
		t.Errorf("fired at %s for %s: %s late in schedule time", fired[0].FiredAt, stopAt, late)
	}
	_, err = sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(res.ScheduleName), GroupName: aws.String("ollama-ecs")})
	if apiCode(err) != "ResourceNotFoundException" {
		t.Fatalf("GetSchedule after firing: %v, want ResourceNotFoundException (deleted with the deployment)", err)
	}
}

func TestSchedulerAPI(t *testing.T) {
	ctx := context.Background()
	var invoked []string
	sched := NewScheduler(SchedulerOptions{Log: quiet, Invoke: func(_ context.Context, name string, _ schedtypes.Target) error {
		invoked = append(invoked, name)
		return nil
	}})
	defer sched.Close()
	create := func(name, expr, tz string) error {
		input, _ := json.Marshal(map[string]string{"k": "v"})
		_, err := sched.CreateSchedule(ctx, &scheduler.CreateScheduleInput{
			Name: aws.String(name), GroupName: aws.String("g"), ScheduleExpression: aws.String(expr),
			ScheduleExpressionTimezone: aws.String(tz), FlexibleTimeWindow: &schedtypes.FlexibleTimeWindow{Mode: schedtypes.FlexibleTimeWindowModeOff},
			Target: &schedtypes.Target{Arn: aws.String("arn:aws:lambda:us-east-1:111122223333:function:f"), Input: aws.String(string(input))},
		})
		return err
	}
	later := "at(" + time.Now().UTC().Add(6*time.Hour).Format("2006-01-02T15:04:05") + ")"
	sched.FailNextCreates(1)
	cases := []struct {
		name, expr, tz, code string
	}{
		{"s1", later, "UTC", "ThrottlingException"}, // the armed fault
		{"s1", later, "UTC", ""},
		{"s1", later, "UTC", "ConflictException"},
		{"s2", later, "Europe/Paris", ""},
		{"s3", "rate(5 minutes)", "", "ValidationException"},
		{"s4", "at(2026-13-01T00:00:00)", "", "ValidationException"},
		{"s5", later, "Mars/Olympus", "ValidationException"},
		{"past", "at(2020-01-01T00:00:00)", "", ""},
	}
	for _, c := range cases {
		if err := create(c.name, c.expr, c.tz); apiCode(err) != c.code {
			t.Errorf("CreateSchedule(%s, %s, %s) = %v, want code %q", c.name, c.expr, c.tz, err, c.code)
		}
	}
	deadline := time.Now().Add(2 * time.Second)
	for len(sched.Fired()) == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if f := sched.Fired(); len(f) != 1 || f[0].Name != "past" || len(invoked) != 1 {
		t.Fatalf("a schedule in the past fires at once through Invoke: fired %+v, invoked %v", f, invoked)
	}
	list, _ := sched.ListSchedules(ctx, &scheduler.ListSchedulesInput{GroupName: aws.String("g")})
	if len(list.Schedules) != 3 { // s1, s2, and past (no DELETE after completion)
		t.Errorf("ListSchedules: %d schedules, want 3", len(list.Schedules))
	}
	if _, err := sched.DeleteSchedule(ctx, &scheduler.DeleteScheduleInput{Name: aws.String("s1"), GroupName: aws.String("g")}); err != nil {
		t.Fatal(err)
	}
	if _, err := sched.DeleteSchedule(ctx, &scheduler.DeleteScheduleInput{Name: aws.String("s1"), GroupName: aws.String("g")}); apiCode(err) != "ResourceNotFoundException" {
		t.Fatalf("second delete: %v, want ResourceNotFoundException", err)
	}
}

// TestCleanupStopsTaskAndSchedule runs the real cleanup step: the task stops and the schedule is gone.
func TestCleanupStopsTaskAndSchedule(t *testing.T) {
	e, _ := newTestECS(t, Config{})
	sched := NewScheduler(SchedulerOptions{Log: quiet})
	defer sched.Close()
	ctx := context.Background()
	run := &steps.RunTask{ECS: e, Cluster: "ollama-ecs", CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu"}
	cand := planner.Candidate{Placement: "cpu", LaunchType: "FARGATE", CPU: 1024, MemoryMiB: 2048, TaskDefinition: planner.TaskDefinitionCPU}
	state := deployment.State{Request: &deployment.Request{DeploymentID: "dep-clean", ModelName: "tiny", Env: "dev"},
		Capacity: &deployment.CapacityState{Available: true, Candidate: &cand}, Plan: &planner.Plan{AutoStopSeconds: 3600}}
	info, err := run.Handle(ctx, state)
	if err != nil {
		t.Fatal(err)
	}
	state.Task = &info
	if _, err := (&steps.AutoStop{Scheduler: sched, ECS: e, Cluster: "ollama-ecs", Group: "ollama-ecs", StopFunctionArn: testStopFn}).Handle(ctx, state); err != nil {
		t.Fatal(err)
	}
	stopper := &deployment.Stopper{ECS: e, Scheduler: sched, Cluster: "ollama-ecs", Group: "ollama-ecs"}
	got, err := (&steps.Cleanup{Stopper: stopper}).Handle(ctx, state)
	if err != nil || len(got.Tasks) != 1 || len(got.Schedules) != 1 {
		t.Fatalf("Cleanup = %+v, %v; want one task and one schedule", got, err)
	}
	if _, err := e.WaitStatus(ctx, info.TaskArn, StatusStopped); err != nil {
		t.Fatal(err)
	}
	if again, err := (&steps.Cleanup{Stopper: stopper}).Handle(ctx, state); err != nil || len(again.Tasks) != 0 {
		t.Fatalf("second Cleanup = %+v, %v; want nothing left to stop", again, err)
	}
	list, _ := e.ListTasks(ctx, &ecs.ListTasksInput{StartedBy: aws.String("dep-clean")})
	if len(list.TaskArns) != 0 {
		t.Fatalf("running tasks left: %v", list.TaskArns)
	}
}

// TestCleanupStopsOnlyItsOwnExecution: two requests under one deployment id; the clean-up of the one that started
// nothing leaves the other's task and schedule alone; the clean-up of the owner stops its task and deletes the
// schedule that would stop it.
func TestCleanupStopsOnlyItsOwnExecution(t *testing.T) {
	e, _ := newTestECS(t, Config{})
	sched := NewScheduler(SchedulerOptions{Log: quiet})
	defer sched.Close()
	ctx := context.Background()
	in := gpuRun("dep-shared", 1024, 1024, 0, "")
	in.Tags = append(in.Tags, ecstypesTag(deployment.TagManagedBy, deployment.ManagedByValue), ecstypesTag(deployment.TagExecution, "exec-a"))
	out, err := e.RunTask(ctx, in)
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("RunTask: %v %+v", err, out)
	}
	arn := aws.ToString(out.Tasks[0].TaskArn)
	a := &steps.AutoStop{Scheduler: sched, ECS: e, Cluster: "ollama-ecs", Group: "ollama-ecs", RoleArn: "arn:aws:iam::111122223333:role/s", StopFunctionArn: testStopFn, Now: sched.Now}
	if _, err := a.Handle(ctx, deployment.State{Request: &deployment.Request{DeploymentID: "dep-shared"}, Task: &deployment.TaskInfo{TaskArn: arn},
		Plan: &planner.Plan{AutoStopSeconds: 3600}}); err != nil {
		t.Fatal(err)
	}
	cleanup := &steps.Cleanup{Stopper: &deployment.Stopper{ECS: e, Scheduler: sched, Cluster: "ollama-ecs", Group: "ollama-ecs"}}
	other, err := cleanup.Handle(ctx, deployment.State{Request: &deployment.Request{DeploymentID: "dep-shared", ExecutionName: "exec-b"},
		Error: &deployment.StateError{Error: "DeploymentExistsError"}})
	if err != nil || len(other.Tasks) != 0 || len(other.Schedules) != 0 {
		t.Fatalf("clean-up of the other request: %+v %v", other, err)
	}
	if _, err := sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(deployment.ScheduleName("dep-shared")), GroupName: aws.String("ollama-ecs")}); err != nil {
		t.Fatalf("the owner's schedule is gone: %v", err)
	}
	owner, err := cleanup.Handle(ctx, deployment.State{Request: &deployment.Request{DeploymentID: "dep-shared", ExecutionName: "exec-a"}})
	if err != nil || len(owner.Tasks) != 1 || owner.Tasks[0] != arn || len(owner.Schedules) != 1 {
		t.Fatalf("clean-up of the owner: %+v %v", owner, err)
	}
	_, err = sched.GetSchedule(ctx, &scheduler.GetScheduleInput{Name: aws.String(deployment.ScheduleName("dep-shared")), GroupName: aws.String("ollama-ecs")})
	if apiCode(err) != "ResourceNotFoundException" {
		t.Errorf("schedule after the owner's clean-up: %v, want ResourceNotFoundException", err)
	}
}

func ecstypesTag(k, v string) ecstypes.Tag {
	return ecstypes.Tag{Key: aws.String(k), Value: aws.String(v)}
}

// TestStackDeletionStopsEveryDeployment: the stack's custom resource, deleted before the capacity providers, stops
// every deployment (dev and prod) and answers CloudFormation at its ResponseURL; creating it stops nothing.
func TestStackDeletionStopsEveryDeployment(t *testing.T) {
	e, _ := newTestECS(t, Config{})
	sched := NewScheduler(SchedulerOptions{Log: quiet})
	defer sched.Close()
	ctx := context.Background()
	for _, env := range []string{"dev", "prod"} {
		in := gpuRun("dep-"+env, 1024, 1024, 0, "")
		in.Tags = append(in.Tags, ecstypesTag(deployment.TagManagedBy, deployment.ManagedByValue), ecstypesTag(deployment.TagEnv, env))
		if _, err := e.RunTask(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	var answers []map[string]any
	cfnEndpoint := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var a map[string]any
		_ = json.NewDecoder(r.Body).Decode(&a)
		answers = append(answers, a)
	}))
	defer cfnEndpoint.Close()
	teardown := &steps.Teardown{Stopper: &deployment.Stopper{ECS: e, Scheduler: sched, Cluster: "ollama-ecs", Group: "ollama-ecs"}}
	event := func(requestType string) []byte {
		raw, _ := json.Marshal(map[string]any{"RequestType": requestType, "ResponseURL": cfnEndpoint.URL + "/answer",
			"StackId": "arn:aws:cloudformation:us-east-1:111122223333:stack/OllamaEcs/1", "RequestId": "r-" + requestType,
			"LogicalResourceId": "StopDeploymentsOnDelete", "ResourceType": "Custom::StopDeployments",
			"PhysicalResourceId": steps.StackResourceID})
		return raw
	}
	created, err := teardown.Handle(ctx, event("Create"))
	if err != nil || len(created.Tasks) != 0 {
		t.Fatalf("create: %+v %v", created, err)
	}
	deleted, err := teardown.Handle(ctx, event("Delete"))
	if err != nil || len(deleted.Tasks) != 2 {
		t.Fatalf("delete: %+v %v", deleted, err)
	}
	if len(answers) != 2 || answers[0]["Status"] != "SUCCESS" || answers[1]["Status"] != "SUCCESS" ||
		answers[1]["PhysicalResourceId"] != steps.StackResourceID {
		t.Errorf("answers to CloudFormation: %+v", answers)
	}
}

// testStopFn is the stop function auto-stop schedules target in these tests.
const testStopFn = "arn:aws:lambda:us-east-1:111122223333:function:teardown"
