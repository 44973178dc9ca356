package cloud

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/smithy-go"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/functions/steps"
	"github.com/ollama-ecs/ollama-ecs/planner"
)

// quiet drops the cluster's logs in tests of placement, where they would drown the failures.
var quiet = slog.New(slog.DiscardHandler)

func newTestECS(t *testing.T, cfg Config) (*ECS, *fakeRunner) {
	t.Helper()
	r := &fakeRunner{}
	e, err := NewECS(ECSOptions{Config: cfg, Runner: r, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e, r
}

// gpuRun is the RunTask the runtask step sends for a GPU candidate, reduced to what placement reads.
func gpuRun(token string, cpu, mem, gpus int, constraint string) *ecs.RunTaskInput {
	in := &ecs.RunTaskInput{
		Cluster: aws.String("ollama-ecs"), TaskDefinition: aws.String("ollama-gpu"), ClientToken: aws.String(token),
		StartedBy: aws.String(token), LaunchType: ecstypes.LaunchTypeEc2,
		Overrides: &ecstypes.TaskOverride{Cpu: aws.String(strconv.Itoa(cpu)), Memory: aws.String(strconv.Itoa(mem)),
			ContainerOverrides: []ecstypes.ContainerOverride{{Name: aws.String("ollama")}}},
		Tags: []ecstypes.Tag{{Key: aws.String("ollama-ecs:deployment-id"), Value: aws.String(token)}},
	}
	if gpus > 0 {
		in.Overrides.ContainerOverrides[0].ResourceRequirements = []ecstypes.ResourceRequirement{{Type: ecstypes.ResourceTypeGpu, Value: aws.String(strconv.Itoa(gpus))}}
	}
	if constraint != "" {
		in.PlacementConstraints = []ecstypes.PlacementConstraint{{Type: ecstypes.PlacementConstraintTypeMemberOf, Expression: aws.String(constraint)}}
	}
	return in
}

func instanceType(t *testing.T, e *ECS, task ecstypes.Task) string {
	t.Helper()
	out, err := e.DescribeContainerInstances(context.Background(), &ecs.DescribeContainerInstancesInput{ContainerInstances: []string{aws.ToString(task.ContainerInstanceArn)}})
	if err != nil || len(out.ContainerInstances) != 1 {
		t.Fatalf("DescribeContainerInstances: %v %+v", err, out)
	}
	for _, a := range out.ContainerInstances[0].Attributes {
		if aws.ToString(a.Name) == "ecs.instance-type" {
			return aws.ToString(a.Value)
		}
	}
	return ""
}

func TestPlacement(t *testing.T) {
	cases := []struct {
		name       string
		first      *ecs.RunTaskInput // run before, to take room
		in         *ecs.RunTaskInput
		wantType   string // instance type, or "" for a failure
		wantReason string
	}{
		{name: "constraint picks g5", in: gpuRun("a", 4096, 14000, 1, "attribute:ecs.instance-type == g5.xlarge"), wantType: "g5.xlarge"},
		{name: "in list", in: gpuRun("a", 1024, 1024, 1, "attribute:ecs.instance-type in (p3.2xlarge, g5.xlarge)"), wantType: "g5.xlarge"},
		{name: "regex and custom attribute", in: gpuRun("a", 1024, 1024, 1, "attribute:ecs.instance-type =~ g.* and attribute:gpu == t4"), wantType: "g4dn.xlarge"},
		{name: "or", in: gpuRun("a", 1024, 1024, 0, "attribute:gpu == a10g or attribute:gpu == h100"), wantType: "g5.xlarge"},
		{name: "not equal", in: gpuRun("a", 1024, 1024, 0, "attribute:ecs.instance-type != g4dn.xlarge"), wantType: "g5.xlarge"},
		{name: "no such type", in: gpuRun("a", 1024, 1024, 1, "attribute:ecs.instance-type == p3.2xlarge"), wantReason: "ATTRIBUTE"},
		{name: "too much memory", in: gpuRun("a", 1024, 15000, 0, "attribute:ecs.instance-type == g4dn.xlarge"), wantReason: "RESOURCE:MEMORY"},
		{name: "too much cpu", in: gpuRun("a", 8192, 1024, 0, "attribute:ecs.instance-type == g4dn.xlarge"), wantReason: "RESOURCE:CPU"},
		{name: "two GPUs", in: gpuRun("a", 1024, 1024, 2, ""), wantReason: "RESOURCE:GPU"},
		{name: "GPU taken", first: gpuRun("x", 1024, 1024, 1, "attribute:ecs.instance-type == g4dn.xlarge"),
			in: gpuRun("a", 1024, 1024, 1, "attribute:ecs.instance-type == g4dn.xlarge"), wantReason: "RESOURCE:GPU"},
		{name: "GPU taken falls to the other type without a constraint", first: gpuRun("x", 1024, 1024, 1, "attribute:ecs.instance-type == g4dn.xlarge"),
			in: gpuRun("a", 1024, 1024, 1, ""), wantType: "g5.xlarge"},
		{name: "CPU left beside a running task", first: gpuRun("x", 3072, 1024, 0, "ec2InstanceType == g4dn.xlarge"),
			in: gpuRun("a", 1024, 1024, 1, "ec2InstanceType == g4dn.xlarge"), wantType: "g4dn.xlarge"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e, _ := newTestECS(t, Config{})
			ctx := context.Background()
			if c.first != nil {
				if out, err := e.RunTask(ctx, c.first); err != nil || len(out.Tasks) != 1 {
					t.Fatalf("first RunTask: %v %+v", err, out)
				}
			}
			out, err := e.RunTask(ctx, c.in)
			if err != nil {
				t.Fatal(err)
			}
			if c.wantType != "" {
				if len(out.Tasks) != 1 || len(out.Failures) != 0 {
					t.Fatalf("want one task, got %d tasks and failures %s", len(out.Tasks), failures(out.Failures))
				}
				if got := instanceType(t, e, out.Tasks[0]); got != c.wantType {
					t.Fatalf("placed on %s, want %s", got, c.wantType)
				}
				return
			}
			if len(out.Tasks) != 0 || !strings.Contains(failures(out.Failures), c.wantReason) {
				t.Fatalf("want no task and a %s failure, got %d tasks and failures %s", c.wantReason, len(out.Tasks), failures(out.Failures))
			}
		})
	}
}

func failures(fs []ecstypes.Failure) string {
	var parts []string
	for _, f := range fs {
		parts = append(parts, aws.ToString(f.Reason))
	}
	return strings.Join(parts, ",")
}

func TestInvalidRequests(t *testing.T) {
	fargate := func(mut func(*ecs.RunTaskInput)) *ecs.RunTaskInput {
		in := gpuRun("f", 1024, 2048, 0, "")
		in.LaunchType = ecstypes.LaunchTypeFargate
		mut(in)
		return in
	}
	cases := []struct {
		name string
		in   *ecs.RunTaskInput
		code string
	}{
		{"fargate with a placement constraint", fargate(func(in *ecs.RunTaskInput) {
			in.PlacementConstraints = []ecstypes.PlacementConstraint{{Type: ecstypes.PlacementConstraintTypeMemberOf, Expression: aws.String("attribute:a == b")}}
		}), "InvalidParameterException"},
		{"fargate with a GPU", fargate(func(in *ecs.RunTaskInput) {
			in.Overrides.ContainerOverrides[0].ResourceRequirements = []ecstypes.ResourceRequirement{{Type: ecstypes.ResourceTypeGpu, Value: aws.String("1")}}
		}), "InvalidParameterException"},
		{"fargate size", fargate(func(in *ecs.RunTaskInput) { in.Overrides.Memory = aws.String("100") }), "InvalidParameterException"},
		{"launch type and strategy", fargate(func(in *ecs.RunTaskInput) {
			in.CapacityProviderStrategy = []ecstypes.CapacityProviderStrategyItem{{CapacityProvider: aws.String("FARGATE"), Weight: 1}}
		}), "InvalidParameterException"},
		{"unknown provider", fargate(func(in *ecs.RunTaskInput) {
			in.LaunchType = ""
			in.CapacityProviderStrategy = []ecstypes.CapacityProviderStrategyItem{{CapacityProvider: aws.String("nope"), Weight: 1}}
		}), "InvalidParameterException"},
		{"bad expression", gpuRun("x", 1024, 1024, 0, "attribute:a =="), "InvalidParameterException"},
		{"unknown container", fargate(func(in *ecs.RunTaskInput) { in.Overrides.ContainerOverrides[0].Name = aws.String("sidecar") }), "InvalidParameterException"},
		{"other cluster", fargate(func(in *ecs.RunTaskInput) { in.Cluster = aws.String("prod") }), "ClusterNotFoundException"},
	}
	e, _ := newTestECS(t, Config{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, err := e.RunTask(context.Background(), c.in)
			var api smithy.APIError
			if !errors.As(err, &api) || api.ErrorCode() != c.code {
				t.Fatalf("RunTask = %+v, %v; want API error %s", out, err, c.code)
			}
		})
	}
}

// TestNoDoubleBooking: 50 deployments at once on two GPUs get exactly two tasks, on different GPUs.
func TestNoDoubleBooking(t *testing.T) {
	e, _ := newTestECS(t, Config{})
	var wg sync.WaitGroup
	results := make([]*ecs.RunTaskOutput, 50)
	for i := range results {
		wg.Go(func() {
			out, err := e.RunTask(context.Background(), gpuRun(fmt.Sprintf("d%02d", i), 2048, 8192, 1, "attribute:ecs.instance-type =~ g.*"))
			if err != nil {
				t.Error(err)
			}
			results[i] = out
		})
	}
	wg.Wait()
	gpus := map[string]string{}
	for _, out := range results {
		if out == nil {
			continue
		}
		for _, task := range out.Tasks {
			for _, id := range task.Containers[0].GpuIds {
				if prev, taken := gpus[id]; taken {
					t.Fatalf("GPU %s given to %s and %s", id, prev, aws.ToString(task.TaskArn))
				}
				gpus[id] = aws.ToString(task.TaskArn)
			}
		}
		if len(out.Tasks) == 0 && len(out.Failures) == 0 {
			t.Fatal("a RunTask with neither task nor failure")
		}
	}
	if len(gpus) != 2 {
		t.Fatalf("%d tasks got a GPU, want 2", len(gpus))
	}
	out, err := e.ListContainerInstances(context.Background(), &ecs.ListContainerInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	desc, err := e.DescribeContainerInstances(context.Background(), &ecs.DescribeContainerInstancesInput{ContainerInstances: out.ContainerInstanceArns})
	if err != nil {
		t.Fatal(err)
	}
	for _, ci := range desc.ContainerInstances {
		for _, r := range ci.RemainingResources {
			switch aws.ToString(r.Name) {
			case "CPU":
				if r.IntegerValue != 4096-2048 {
					t.Errorf("remaining CPU %d, want 2048", r.IntegerValue)
				}
			case "MEMORY":
				if r.IntegerValue != 14592-8192 {
					t.Errorf("remaining memory %d, want %d", r.IntegerValue, 14592-8192)
				}
			case "GPU":
				if len(r.StringSetValue) != 0 {
					t.Errorf("free GPUs %v, want none", r.StringSetValue)
				}
			}
		}
	}
}

func TestClientTokenIdempotent(t *testing.T) {
	e, r := newTestECS(t, Config{})
	ctx := context.Background()
	first, err := e.RunTask(ctx, gpuRun("dep-1", 1024, 1024, 1, ""))
	if err != nil || len(first.Tasks) != 1 {
		t.Fatalf("RunTask: %v %+v", err, first)
	}
	arn := aws.ToString(first.Tasks[0].TaskArn)
	if _, err := e.StopTask(ctx, &ecs.StopTaskInput{Task: aws.String(arn)}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.WaitStatus(ctx, arn, StatusStopped); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		again, err := e.RunTask(ctx, gpuRun("dep-1", 1024, 1024, 1, ""))
		if err != nil || len(again.Tasks) != 1 || aws.ToString(again.Tasks[0].TaskArn) != arn {
			t.Fatalf("RunTask with the same token: %v %+v, want task %s again", err, again, arn)
		}
	}
	list, _ := e.ListTasks(ctx, &ecs.ListTasksInput{StartedBy: aws.String("dep-1"), DesiredStatus: ecstypes.DesiredStatusStopped})
	if len(list.TaskArns) != 1 || len(r.started) > 1 {
		t.Fatalf("tasks started for one token: %v (runner starts %d)", list.TaskArns, len(r.started))
	}
	// The same token with another request is refused, as ECS refuses it: ConflictException naming the tasks.
	other := gpuRun("dep-1", 2048, 1024, 1, "")
	_, err = e.RunTask(ctx, other)
	var conflict *ecstypes.ConflictException
	if !errors.As(err, &conflict) || conflict.ErrorCode() != "ConflictException" || len(conflict.ResourceIds) != 1 || conflict.ResourceIds[0] != arn {
		t.Errorf("same token, other request: %v, want ConflictException naming %s", err, arn)
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	type want struct {
		stopCode ecstypes.TaskStopCode
		reason   string // part of the stopped reason
		exitCode *int32
		contains string // part of the container reason
	}
	cases := []struct {
		name   string
		runner *fakeRunner
		arm    func(*ECS)
		in     func() *ecs.RunTaskInput
		act    func(*ECS, string) error
		want   want
	}{
		{name: "stop task", act: func(e *ECS, arn string) error { return running(e, arn, stop) }, want: want{ecstypes.TaskStopCodeUserInitiated, "ttl reached", aws.Int32(143), ""}},
		{name: "crash after start", arm: func(e *ECS) { e.Faults().CrashNextTask(StageStarted) }, act: nothing,
			want: want{ecstypes.TaskStopCodeEssentialContainerExited, "Essential container in task exited", aws.Int32(137), "signal 9"}},
		{name: "crash mid-load", arm: func(e *ECS) { e.Faults().CrashNextTask(StageLoading) }, act: nothing,
			want: want{ecstypes.TaskStopCodeEssentialContainerExited, "Essential container", aws.Int32(137), "signal 9"}},
		{name: "crash killing the process", act: func(e *ECS, arn string) error { return running(e, arn, (*ECS).CrashTask) },
			want: want{ecstypes.TaskStopCodeEssentialContainerExited, "Essential container", aws.Int32(137), ""}},
		{name: "crash while pending", arm: func(e *ECS) { e.Faults().CrashNextTask(StagePending) }, act: nothing,
			want: want{ecstypes.TaskStopCodeTaskFailedToStart, "CannotStartContainerError", nil, "failed to start"}},
		{name: "container does not start", runner: &fakeRunner{startErr: errFakeStart}, act: nothing,
			want: want{ecstypes.TaskStopCodeTaskFailedToStart, "image pull failed", nil, "image pull failed"}},
		{name: "model fails", in: func() *ecs.RunTaskInput {
			in := gpuRun("lc", 1024, 1024, 1, "")
			in.Overrides.ContainerOverrides[0].Environment = []ecstypes.KeyValuePair{{Name: aws.String("FAKE_MODEL_ERROR"), Value: aws.String("ollama pull x: registry unreachable")}}
			return in
		}, act: nothing, want: want{ecstypes.TaskStopCodeEssentialContainerExited, "Essential container", aws.Int32(1), "registry unreachable"}},
		{name: "hung task stopped", arm: func(e *ECS) { e.Faults().HangNextTasks(1) }, act: func(e *ECS, arn string) error {
			time.Sleep(30 * time.Millisecond)
			got, _ := e.DescribeTasks(ctx, &ecs.DescribeTasksInput{Tasks: []string{arn}})
			if s := aws.ToString(got.Tasks[0].LastStatus); s != StatusPending {
				return fmt.Errorf("hung task is %s, want PENDING", s)
			}
			return stop(e, arn)
		}, want: want{ecstypes.TaskStopCodeUserInitiated, "ttl reached", nil, ""}},
		{name: "spot interruption", in: func() *ecs.RunTaskInput {
			in := gpuRun("lc", 1024, 2048, 0, "")
			in.LaunchType = ""
			in.CapacityProviderStrategy = []ecstypes.CapacityProviderStrategyItem{{CapacityProvider: aws.String("FARGATE_SPOT"), Weight: 1}}
			return in
		}, act: func(e *ECS, arn string) error {
			if _, err := e.WaitStatus(ctx, arn, StatusRunning); err != nil {
				return err
			}
			return e.InterruptSpot(arn)
		}, want: want{ecstypes.TaskStopCodeSpotInterruption, "Spot Task was interrupted", aws.Int32(143), ""}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := c.runner
			if r == nil {
				r = &fakeRunner{}
			}
			e, err := NewECS(ECSOptions{Runner: r, Log: quiet, ProvisioningDelay: 5 * time.Millisecond, PendingDelay: 5 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close(ctx)
			if c.arm != nil {
				c.arm(e)
			}
			in := gpuRun("lc", 1024, 1024, 1, "")
			if c.in != nil {
				in = c.in()
			}
			out, err := e.RunTask(ctx, in)
			if err != nil || len(out.Tasks) != 1 {
				t.Fatalf("RunTask: %v %+v", err, out)
			}
			if s := aws.ToString(out.Tasks[0].LastStatus); s != StatusProvisioning {
				t.Errorf("new task is %s, want PROVISIONING", s)
			}
			arn := aws.ToString(out.Tasks[0].TaskArn)
			if err := c.act(e, arn); err != nil {
				t.Fatal(err)
			}
			waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			got, err := e.WaitStatus(waitCtx, arn, StatusStopped)
			if err != nil {
				t.Fatal(err)
			}
			ctr := got.Containers[0]
			if got.StopCode != c.want.stopCode || !strings.Contains(aws.ToString(got.StoppedReason), c.want.reason) ||
				!strings.Contains(aws.ToString(ctr.Reason), c.want.contains) || fmt.Sprint(aws.ToInt32(ctr.ExitCode)) != fmt.Sprint(aws.ToInt32(c.want.exitCode)) ||
				(ctr.ExitCode == nil) != (c.want.exitCode == nil) {
				t.Fatalf("stopped task: code %s, reason %q, exit %v, container reason %q; want %s, %q, %v, %q",
					got.StopCode, aws.ToString(got.StoppedReason), fmtExit(ctr.ExitCode), aws.ToString(ctr.Reason),
					c.want.stopCode, c.want.reason, fmtExit(c.want.exitCode), c.want.contains)
			}
			if aws.ToString(got.DesiredStatus) != StatusStopped || got.StoppedAt == nil || got.CreatedAt == nil {
				t.Errorf("stopped task: desired %s, stoppedAt %v", aws.ToString(got.DesiredStatus), got.StoppedAt)
			}
			// The task's resources are free again: the same request fits.
			in.ClientToken = aws.String("again")
			if again, err := e.RunTask(ctx, in); err != nil || len(again.Tasks) != 1 {
				t.Fatalf("resources not released: %v %s", err, failures(again.Failures))
			}
		})
	}
}

func stop(e *ECS, arn string) error {
	_, err := e.StopTask(context.Background(), &ecs.StopTaskInput{Task: aws.String(arn), Reason: aws.String("ttl reached")})
	return err
}

func nothing(*ECS, string) error { return nil }

// running acts once the task runs.
func running(e *ECS, arn string, act func(*ECS, string) error) error {
	if _, err := e.WaitStatus(context.Background(), arn, StatusRunning); err != nil {
		return err
	}
	return act(e, arn)
}

func fmtExit(c *int32) string {
	if c == nil {
		return "none"
	}
	return strconv.Itoa(int(*c))
}

// TestRunningTask checks what the health step reads of a running task: status, the 127.0.0.1 ENI, tags only
// with Include TAGS, the endpoint, and the listing filters the stop steps use.
func TestRunningTask(t *testing.T) {
	e, r := newTestECS(t, Config{})
	ctx := context.Background()
	in := gpuRun("dep-run", 2048, 4096, 1, "")
	in.Overrides.ContainerOverrides[0].Environment = []ecstypes.KeyValuePair{{Name: aws.String(deployment.EnvModel), Value: aws.String("tiny")}}
	in.Overrides.ContainerOverrides = append(in.Overrides.ContainerOverrides, ecstypes.ContainerOverride{Name: aws.String("fetch"),
		Environment: []ecstypes.KeyValuePair{{Name: aws.String(deployment.EnvSource), Value: aws.String("s3://b/k.gguf")}}})
	out, err := e.RunTask(ctx, in)
	if err != nil || len(out.Tasks) != 1 {
		t.Fatalf("RunTask: %v %+v", err, out)
	}
	arn := aws.ToString(out.Tasks[0].TaskArn)
	task, err := e.WaitStatus(ctx, arn, StatusRunning)
	if err != nil {
		t.Fatal(err)
	}
	if ep, err := steps.PrivateEndpoint(deployment.OllamaPort)(ctx, task); err != nil || !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Errorf("private address: %q, %v", ep, err)
	}
	ep, err := e.Endpoint(ctx, task)
	if err != nil || !strings.HasPrefix(ep, "http://127.0.0.1:") {
		t.Errorf("Endpoint = %q, %v", ep, err)
	}
	if c := r.started[0]; c.Env[deployment.EnvModel] != "tiny" || c.FetchEnv[deployment.EnvSource] != "s3://b/k.gguf" || len(c.GPUIDs) != 1 {
		t.Errorf("container given to the runner: %+v", c)
	}
	plain, _ := e.DescribeTasks(ctx, &ecs.DescribeTasksInput{Tasks: []string{arn}})
	tagged, _ := e.DescribeTasks(ctx, &ecs.DescribeTasksInput{Tasks: []string{arn, "missing"}, Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if len(plain.Tasks[0].Tags) != 0 || deployment.TagValue(tagged.Tasks[0].Tags, "ollama-ecs:deployment-id") != "dep-run" {
		t.Errorf("tags: without Include %v, with %v", plain.Tasks[0].Tags, tagged.Tasks[0].Tags)
	}
	if len(tagged.Failures) != 1 || aws.ToString(tagged.Failures[0].Reason) != "MISSING" {
		t.Errorf("describe of an unknown task: failures %+v", tagged.Failures)
	}
	for _, c := range []struct {
		in   *ecs.ListTasksInput
		want int
	}{
		{&ecs.ListTasksInput{}, 1},
		{&ecs.ListTasksInput{StartedBy: aws.String("dep-run")}, 1},
		{&ecs.ListTasksInput{StartedBy: aws.String("other")}, 0},
		{&ecs.ListTasksInput{Family: aws.String("ollama-gpu")}, 1},
		{&ecs.ListTasksInput{DesiredStatus: ecstypes.DesiredStatusStopped}, 0},
	} {
		got, err := e.ListTasks(ctx, c.in)
		if err != nil || len(got.TaskArns) != c.want {
			t.Errorf("ListTasks(%+v) = %v, %v; want %d", c.in, got.TaskArns, err, c.want)
		}
	}
	if _, err := e.StopTask(ctx, &ecs.StopTaskInput{Task: aws.String("arn:aws:ecs:us-east-1:111122223333:task/ollama-ecs/nope")}); err == nil ||
		!strings.Contains(err.Error(), "not found") {
		t.Errorf("StopTask of an unknown task: %v", err)
	}
}

// TestCapacityHandler runs the real capacity step against the local cluster, through scale-out of a capacity
// provider to its maximum.
func TestCapacityHandler(t *testing.T) {
	cfg := DefaultConfig()
	cfg.ContainerInstances = nil
	cfg.CapacityProviders = []CapacityProviderConfig{{Name: "gpu-g4dn", AutoScalingGroup: "asg-g4dn", Desired: 0, Max: 1,
		Instance: InstanceGroup{InstanceType: "g4dn.xlarge", CPU: 4096, MemoryMiB: 14592, GPUs: 1}}}
	e, _ := newTestECS(t, cfg)
	ctx := context.Background()
	h := &steps.Capacity{ECS: e, Launches: &steps.Launches{ECS: e, Groups: e.AutoScaling()}, Cluster: "ollama-ecs", Providers: map[string]string{"g4dn.xlarge": "gpu-g4dn"}}
	cand := planner.Candidate{Placement: "gpu:g4dn.xlarge", TaskDefinition: planner.TaskDefinitionGPU, LaunchType: "EC2", InstanceType: "g4dn.xlarge", CPU: 4096, MemoryMiB: 14000, GPUCount: 1}
	state := deployment.State{Request: &deployment.Request{DeploymentID: "dep-cap"}, Plan: &planner.Plan{Candidates: []planner.Candidate{cand}}}
	got, err := h.Handle(ctx, state)
	if err != nil || !got.Available {
		t.Fatalf("before scale-out: %+v, %v; want available (the group can grow)", got, err)
	}
	run := &steps.RunTask{ECS: e, Cluster: "ollama-ecs", CPUTaskDefinition: "ollama-cpu", GPUTaskDefinition: "ollama-gpu", Providers: h.Providers}
	state.Request.ModelName, state.Capacity = "tiny", &got
	info, err := run.Handle(ctx, state)
	if err != nil {
		t.Fatalf("RunTask step: %v", err)
	}
	groups, _ := e.AutoScaling().DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{"asg-g4dn"}})
	if len(groups.AutoScalingGroups) != 1 || aws.ToInt32(groups.AutoScalingGroups[0].DesiredCapacity) != 1 || len(groups.AutoScalingGroups[0].Instances) != 1 {
		t.Fatalf("group after scale-out: %+v", groups.AutoScalingGroups)
	}
	if _, err := e.WaitStatus(ctx, info.TaskArn, StatusRunning); err != nil {
		t.Fatal(err)
	}
	state.Capacity = nil
	state.Request.DeploymentID = "dep-cap2"
	got, err = h.Handle(ctx, state)
	if err != nil || got.Available || !strings.Contains(got.Attempts[0].Reason, "maximum") {
		t.Fatalf("at maximum: %+v, %v; want unavailable at the group's maximum", got, err)
	}
}
