package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	elbv2 "github.com/aws/aws-sdk-go-v2/service/elasticloadbalancingv2"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	schedtypes "github.com/aws/aws-sdk-go-v2/service/scheduler/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

const tinySource = "s3://" + local.Bucket + "/models/tiny.gguf"

func ctxFor(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// stackWithTiny starts a stack with the tiny model stored in its bucket (no deployment started by it).
func stackWithTiny(t *testing.T, opts local.Options) *local.Stack {
	s := startStack(t, opts)
	if err := s.Store(ctxFor(t, 10*time.Second), "models/tiny.gguf", tinyGGUF(t)); err != nil {
		t.Fatal(err)
	}
	return s
}

func deploy(t *testing.T, s *local.Stack, req events.DeployRequest) engine.Execution {
	t.Helper()
	if req.Source == "" {
		req.Source = tinySource
	}
	arn, err := s.Deploy(ctxFor(t, 10*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	return waitDone(t, s, arn)
}

func succeeded(t *testing.T, ex engine.Execution) record {
	t.Helper()
	if ex.Status != engine.StatusSucceeded {
		t.Fatalf("%s: status %s: %s: %s\n%s", ex.Name, ex.Status, ex.Error, ex.Cause, deployment.RenderHistory(ex.Events))
	}
	var rec record
	if err := json.Unmarshal(ex.Output, &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func failedWith(t *testing.T, ex engine.Execution, errorName, lastState string) {
	t.Helper()
	if ex.Status != engine.StatusFailed || ex.Error != errorName {
		t.Fatalf("%s: status %s error %q, want FAILED with %s: %s\n%s", ex.Name, ex.Status, ex.Error, errorName, ex.Cause,
			deployment.RenderHistory(ex.Events))
	}
	runs := deployment.StateRuns(ex.Events)
	if got := runs[len(runs)-1].Name; got != lastState {
		t.Errorf("ended in %q, want %q", got, lastState)
	}
}

// tasksOf lists a deployment's tasks that are not stopped.
func tasksOf(t *testing.T, s *local.Stack, deploymentID string) []ecstypes.Task {
	t.Helper()
	ctx := ctxFor(t, 5*time.Second)
	list, err := s.ECS.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(s.ECS.Config().Name), StartedBy: aws.String(deploymentID)})
	if err != nil {
		t.Fatal(err)
	}
	// A prod deployment's tasks are its service's.
	svc, err := s.ECS.ListTasks(ctx, &ecs.ListTasksInput{Cluster: aws.String(s.ECS.Config().Name), ServiceName: aws.String(deployment.ServiceName(deploymentID))})
	if err != nil {
		t.Fatal(err)
	}
	list.TaskArns = append(list.TaskArns, svc.TaskArns...)
	if len(list.TaskArns) == 0 {
		return nil
	}
	out, err := s.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: aws.String(s.ECS.Config().Name), Tasks: list.TaskArns})
	if err != nil {
		t.Fatal(err)
	}
	var live []ecstypes.Task
	for _, task := range out.Tasks {
		if aws.ToString(task.LastStatus) != cloud.StatusStopped {
			live = append(live, task)
		}
	}
	return live
}

// assertNothingLeft checks a deployment left no task, process or schedule.
func assertNothingLeft(t *testing.T, s *local.Stack, deploymentID string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(tasksOf(t, s, deploymentID)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if live := tasksOf(t, s, deploymentID); len(live) > 0 {
		t.Errorf("deployment %s still has %d task(s)", deploymentID, len(live))
	}
	_, err := s.Scheduler.GetSchedule(ctxFor(t, 5*time.Second), &scheduler.GetScheduleInput{
		Name: aws.String(deployment.ScheduleName(deploymentID)), GroupName: aws.String(local.ScheduleGroup)})
	var missing *schedtypes.ResourceNotFoundException
	if !errors.As(err, &missing) {
		t.Errorf("deployment %s: its schedule is not gone (GetSchedule: %v)", deploymentID, err)
	}
	// Its route is gone, or kept for waking: asleep, with no target.
	if tg, err := s.LB.DescribeTargetGroups(ctxFor(t, 5*time.Second), &elbv2.DescribeTargetGroupsInput{Names: []string{deployment.TargetGroupName(deploymentID)}}); err == nil {
		// Going to sleep records it, points the rules at the waker, then empties the target group: give the last
		// step the same time as the tasks.
		rec, asleep := sleepRecord(t, s, deploymentID)
		health, _ := s.LB.DescribeTargetHealth(ctxFor(t, 5*time.Second), &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroups[0].TargetGroupArn})
		for asleep && rec.Asleep && len(health.TargetHealthDescriptions) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
			health, _ = s.LB.DescribeTargetHealth(ctxFor(t, 5*time.Second), &elbv2.DescribeTargetHealthInput{TargetGroupArn: tg.TargetGroups[0].TargetGroupArn})
		}
		if !asleep || !rec.Asleep || len(health.TargetHealthDescriptions) != 0 {
			t.Errorf("deployment %s: its target group is still on the load balancer, and it is not asleep (record %+v, %d targets)",
				deploymentID, rec, len(health.TargetHealthDescriptions))
		}
	}
	// A stopped task's process exits after its stop (SIGTERM, grace): wait for every process of the deployment's
	// tasks, whatever their status, to be gone.
	arns := map[string]bool{}
	for _, status := range []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning, ecstypes.DesiredStatusStopped} {
		list, err := s.ECS.ListTasks(ctxFor(t, 5*time.Second), &ecs.ListTasksInput{Cluster: aws.String(s.ECS.Config().Name),
			StartedBy: aws.String(deploymentID), DesiredStatus: status})
		if err != nil {
			t.Fatal(err)
		}
		for _, arn := range list.TaskArns {
			arns[arn] = true
		}
	}
	running := func() (left []cloud.ProcessInfo) {
		for _, p := range s.ECS.Processes() {
			if arns[p.TaskArn] {
				left = append(left, p)
			}
		}
		return left
	}
	for len(running()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range running() {
		t.Errorf("process %d of %s still runs", p.PID, p.TaskArn)
	}
}

func TestGPUPathAndFallback(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	first := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-one"}))
	if first.Placement != "EC2 g4dn.xlarge" || first.InstanceType != "g4dn.xlarge" {
		t.Fatalf("first GPU deployment on %s", first.Placement)
	}
	// The GPU readiness rule (model wholly in GPU memory) cannot be checked without a GPU: reported, not faked.
	if !strings.HasPrefix(first.GPUReadiness, "not applicable") {
		t.Errorf("GPU readiness %q", first.GPUReadiness)
	}
	task := tasksOf(t, s, "gpu-one")[0]
	if got := len(task.Overrides.ContainerOverrides[0].ResourceRequirements); got != 1 {
		t.Errorf("GPU requirement overrides: %d", got)
	}
	// The cheapest GPU type is now full: the second request falls back along the ladder.
	second := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-two"}))
	if second.InstanceType != "g5.xlarge" {
		t.Fatalf("second GPU deployment on %s", second.Placement)
	}
	if len(second.Fallbacks) != 1 || second.Fallbacks[0].InstanceType != "g4dn.xlarge" ||
		!strings.Contains(second.Fallbacks[0].Reason, "no g4dn.xlarge container instance has") {
		t.Errorf("fallbacks %+v", second.Fallbacks)
	}
	// Both GPUs are taken: an EC2-only request runs out of candidates before any task starts.
	ex := deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", LaunchType: "EC2", DeploymentID: "gpu-three"})
	failedWith(t, ex, "NoCapacityError", "No capacity")
	if !strings.Contains(ex.Cause, "g4dn.xlarge") || !strings.Contains(ex.Cause, "g5.xlarge") {
		t.Errorf("cause does not list the rungs tried: %s", ex.Cause)
	}
	assertNothingLeft(t, s, "gpu-three")
}

// TestDuplicateEventStartsOneTask: the same deploy event delivered twice starts one task.
func TestDuplicateEventStartsOneTask(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": "same-event-id", "source": events.SourceOllamaECS,
		"detail-type": events.DetailTypeDeploy, "detail": map[string]any{"model": "tiny", "source": tinySource, "env": "dev"}})
	var arns []string
	for range 2 {
		routed, err := s.PutEvent(ctxFor(t, 10*time.Second), raw)
		if err != nil {
			t.Fatal(err)
		}
		arns = append(arns, routed.ExecutionArn)
	}
	// Each delivery is an execution of its own: one deploys, the other finds the deployment id taken (its live
	// task, or ECS's client token under other parameters) and fails without touching it.
	exs := []engine.Execution{waitDone(t, s, arns[0]), waitDone(t, s, arns[1])}
	if exs[0].Status != engine.StatusSucceeded {
		exs[0], exs[1] = exs[1], exs[0]
	}
	a := succeeded(t, exs[0])
	failedWith(t, exs[1], "DeploymentExistsError", "Deployment exists")
	if live := tasksOf(t, s, a.DeploymentID); len(live) != 1 || aws.ToString(live[0].TaskArn) != a.TaskArn {
		t.Errorf("tasks for one deployment: %+v", live)
	}
}

func TestFailuresAfterStartCleanUp(t *testing.T) {
	tests := []struct {
		name      string
		fault     func(*cloud.Faults)
		wantError string
	}{
		{"task crashes while loading", func(f *cloud.Faults) { f.CrashNextTask(cloud.StageLoading) }, "TaskStoppedError"},
		{"task never starts: health timeout", func(f *cloud.Faults) { f.HangNextTasks(1) }, "HealthTimeoutError"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := stackWithTiny(t, local.Options{HealthTimeout: 3 * time.Second})
			tt.fault(s.ECS.Faults())
			id := "fault-" + strings.ReplaceAll(strings.Fields(tt.name)[1], " ", "")
			ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id})
			failedWith(t, ex, tt.wantError, "Deployment failed")
			var cleaned bool
			for _, r := range deployment.StateRuns(ex.Events) {
				cleaned = cleaned || r.Name == "Clean up"
			}
			if !cleaned {
				t.Error("no Clean up state ran")
			}
			assertNothingLeft(t, s, id)
		})
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, time.Minute)
	if err := s.Upload(ctx, "models/junk.gguf", bytes.NewReader([]byte(strings.Repeat("not a model ", 100)))); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	failedWith(t, waitDone(t, s, started.ExecutionArn), "NotGGUFError", "Request rejected")
	arn, err := s.Deploy(ctx, events.DeployRequest{Model: "llama9:70b", DeploymentID: "unknown-model"})
	if err != nil {
		t.Fatal(err)
	}
	unknown := waitDone(t, s, arn)
	failedWith(t, unknown, "UnknownModelError", "Request rejected")
	arn, err = s.Deploy(ctx, events.DeployRequest{Model: "llama2:7b", DeploymentID: "too-slow", MinTokensPerSecond: 5000})
	if err != nil {
		t.Fatal(err)
	}
	tooSlow := waitDone(t, s, arn)
	failedWith(t, tooSlow, "TooSlowError", "Request rejected")
	assertNothingLeft(t, s, "too-slow")
	if len(s.ECS.Processes()) != 0 {
		t.Errorf("bad input started %d processes", len(s.ECS.Processes()))
	}
}

func TestAutoStopAndScheduledTeardown(t *testing.T) {
	// Schedule time runs 120x faster: a one-minute TTL fires in half a second.
	s := stackWithTiny(t, local.Options{TimeScale: 120})
	dev := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", TTL: "1m", DeploymentID: "ttl-one"}))
	if dev.ScheduleName != "ollama-ecs-ttl-one" || dev.AutoStopAt == "" {
		t.Fatalf("record %+v", dev)
	}
	assertNothingLeft(t, s, "ttl-one")
	fired := s.Scheduler.Fired()
	if len(fired) != 1 || fired[0].Err != nil {
		t.Errorf("fired %+v", fired)
	}

	devKeep := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "dev-two"}))
	prod := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Env: "prod", DeploymentID: "prod-one"}))
	if prod.AutoStopAt != "" || devKeep.AutoStopAt == "" {
		t.Errorf("auto-stop: prod %q dev %q", prod.AutoStopAt, devKeep.AutoStopAt)
	}
	raw, _ := events.Sample(events.KindTeardown)
	routed, err := s.PutEvent(ctxFor(t, 30*time.Second), raw)
	if err != nil {
		t.Fatal(err)
	}
	if routed.Stopped == nil || len(routed.Stopped.Deployments) != 1 || routed.Stopped.Deployments[0] != "dev-two" {
		t.Errorf("teardown stopped %+v", routed.Stopped)
	}
	assertNothingLeft(t, s, "dev-two")
	if len(tasksOf(t, s, "prod-one")) != 1 {
		t.Error("teardown touched the prod deployment")
	}
}

// TestModelfileUploadDeploysItsFrom uploads a Modelfile whose FROM names a GGUF beside its folder: the deployment
// sizes and loads that GGUF under the Modelfile's name.
func TestModelfileUploadDeploysItsFrom(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	ctx := ctxFor(t, time.Minute)
	if err := s.Upload(ctx, "models/helper-bot/Modelfile", bytes.NewReader([]byte("FROM ../tiny.gguf\nPARAMETER temperature 0.2\n"))); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := succeeded(t, waitDone(t, s, started.ExecutionArn))
	if rec.Model != "helper-bot" {
		t.Errorf("deployed %q, want helper-bot", rec.Model)
	}
	task := tasksOf(t, s, rec.DeploymentID)[0]
	source := ""
	for _, kv := range task.Overrides.ContainerOverrides[0].Environment {
		if aws.ToString(kv.Name) == deployment.EnvSource {
			source = aws.ToString(kv.Value)
		}
	}
	if source != tinySource {
		t.Errorf("task source %q, want the GGUF the Modelfile names (%s)", source, tinySource)
	}
}
