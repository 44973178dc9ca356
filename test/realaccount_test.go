package test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
)

// These tests show, on the real engine, handlers and Ollama, the behaviours of a real account that moto and a
// lenient local cloud would hide: the local cloud refuses and fails the way ECS, Auto Scaling and Service Quotas do.

// TestRepeatedDeploymentIDLeavesTheLiveOneAlone: a second request (other requester, context and TTL) with a live
// deployment's id fails on its own, within ECS's 24-hour client-token lifetime and after it, and touches neither
// the first deployment's task nor its schedule.
func TestRepeatedDeploymentIDLeavesTheLiveOneAlone(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	first := deployEvent("first", map[string]any{"model": "tiny", "source": tinySource, "deploymentId": "dup-id",
		"requester": "alice", "ttl": "2h"})
	routed, err := s.PutEvent(ctxFor(t, 10*time.Second), first)
	if err != nil {
		t.Fatal(err)
	}
	rec := succeeded(t, waitDone(t, s, routed.ExecutionArn))
	schedules := scheduleNames(t, s)

	for _, tt := range []struct {
		name   string
		expire bool
		want   string
	}{
		// The live task is found before RunTask in both cases; ECS's ConflictException is the guard when two
		// requests race past that check, or when the first task has stopped since (see
		// TestOutOfOrderAndDuplicateEvents/redelivered...).
		{"within the token's lifetime", false, "still running"},
		{"after the token expired", true, "still running"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.expire {
				s.ECS.ExpireClientTokens()
			}
			second := deployEvent("second-"+tt.name, map[string]any{"model": "tiny", "source": tinySource,
				"deploymentId": "dup-id", "requester": "bob", "contextLength": 1024, "ttl": "30m"})
			routed, err := s.PutEvent(ctxFor(t, 10*time.Second), second)
			if err != nil {
				t.Fatal(err)
			}
			ex := waitDone(t, s, routed.ExecutionArn)
			failedWith(t, ex, "DeploymentExistsError", "Deployment exists")
			if !strings.Contains(ex.Cause, tt.want) || ranState(ex, "Clean up") {
				t.Errorf("cause %q (want %q), clean up ran: %v", ex.Cause, tt.want, ranState(ex, "Clean up"))
			}
			live := tasksOf(t, s, "dup-id")
			if len(live) != 1 || aws.ToString(live[0].TaskArn) != rec.TaskArn || aws.ToString(live[0].LastStatus) != cloud.StatusRunning {
				t.Errorf("the first deployment's task: %+v", live)
			}
			if got := scheduleNames(t, s); strings.Join(got, ",") != strings.Join(schedules, ",") {
				t.Errorf("schedules %v, want the first deployment's %v", got, schedules)
			}
			if n := tasksStartedBy(t, s, "dup-id"); n != 1 {
				t.Errorf("%d tasks started for the id", n)
			}
		})
	}
	stopDeployment(t, s, "dup-id")
}

// TestGPUThatNeverComes: a capacity provider whose launches fail (quota, no capacity in the zone), a task stuck
// in PROVISIONING, and an account quota too small for another GPU instance each send the ladder on to the next
// candidate, with the stuck task stopped and the reason in the record.
func TestGPUThatNeverComes(t *testing.T) {
	const failure = "Could not launch On-Demand Instances. InsufficientInstanceCapacity - We currently do not have sufficient g4dn.xlarge capacity in the Availability Zone you requested."
	cfg := cloud.DefaultConfig()
	cfg.ContainerInstances = nil
	cfg.CapacityProviders = []cloud.CapacityProviderConfig{{Name: "gpu-g4dn", AutoScalingGroup: "asg-g4dn", Max: 2,
		LaunchFailure: failure, Instance: cloud.InstanceGroup{InstanceType: "g4dn.xlarge", CPU: 4096, MemoryMiB: 14592, GPUs: 1}}}
	s := stackWithTiny(t, local.Options{Cluster: cfg})

	t.Run("a failed launch refuses the placement and stops the waiting task", func(t *testing.T) {
		rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-never"}))
		if rec.Placement != "Fargate Spot" || len(rec.Fallbacks) != 1 || !strings.Contains(rec.Fallbacks[0].Reason, "InsufficientInstanceCapacity") {
			t.Fatalf("record %+v", rec)
		}
		if n := tasksStartedBy(t, s, "gpu-never"); n != 2 {
			t.Errorf("%d tasks, want the stopped GPU one and the Fargate Spot one", n)
		}
		if live := tasksOf(t, s, "gpu-never"); len(live) != 1 || aws.ToString(live[0].TaskArn) != rec.TaskArn {
			t.Errorf("live tasks %+v", live)
		}
		stopDeployment(t, s, "gpu-never")
	})

	t.Run("a recent failed launch refuses the rung before any task starts", func(t *testing.T) {
		ex := deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-never-2"})
		rec := succeeded(t, ex)
		if rec.Placement != "Fargate Spot" || !strings.Contains(rec.Fallbacks[0].Reason, "could not launch") {
			t.Fatalf("record %+v", rec)
		}
		if n := tasksStartedBy(t, s, "gpu-never-2"); n != 1 {
			t.Errorf("%d tasks, want only the Fargate Spot one", n)
		}
		stopDeployment(t, s, "gpu-never-2")
	})

	t.Run("the account's vCPU quota refuses a scale-out", func(t *testing.T) {
		cfg := cloud.DefaultConfig()
		cfg.ContainerInstances = cfg.ContainerInstances[1:] // one g5.xlarge: 4 G-family vCPUs in use
		cfg.CapacityProviders = []cloud.CapacityProviderConfig{{Name: "gpu-g4dn", AutoScalingGroup: "asg-g4dn", Max: 2,
			Instance: cloud.InstanceGroup{InstanceType: "g4dn.xlarge", CPU: 4096, MemoryMiB: 14592, GPUs: 1}}}
		cfg.ServiceQuotas = map[string]float64{"L-DB2E81BA": 4}
		s := stackWithTiny(t, local.Options{Cluster: cfg})
		rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-quota"}))
		if rec.InstanceType != "g5.xlarge" || len(rec.Fallbacks) != 1 ||
			!strings.Contains(rec.Fallbacks[0].Reason, "is 4 vCPUs, 4 in use, g4dn.xlarge needs 4") {
			t.Fatalf("record %+v", rec)
		}
		if n := tasksStartedBy(t, s, "gpu-quota"); n != 1 {
			t.Errorf("%d tasks", n)
		}
		stopDeployment(t, s, "gpu-quota")
	})

	t.Run("a task past the PROVISIONING bound is refused and stopped", func(t *testing.T) {
		s := stackWithTiny(t, local.Options{ProvisioningTimeout: 500 * time.Millisecond})
		s.ECS.Faults().StallProvisioning(1)
		ex := deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "gpu-stuck"})
		rec := succeeded(t, ex)
		if len(rec.Fallbacks) != 1 || rec.Fallbacks[0].InstanceType != "g4dn.xlarge" ||
			!strings.Contains(rec.Fallbacks[0].Reason, "in PROVISIONING for an instance (bound 500ms)") || rec.InstanceType != "g5.xlarge" {
			t.Fatalf("record %+v", rec)
		}
		if !ranState(ex, "Release placement") {
			t.Error("the stuck task was not released")
		}
		stopped := 0
		for _, task := range allTasks(t, s) {
			if aws.ToString(task.StartedBy) == "gpu-stuck" && aws.ToString(task.LastStatus) == cloud.StatusStopped {
				stopped++
			}
		}
		if stopped != 1 {
			t.Errorf("%d stopped tasks, want the stuck one", stopped)
		}
		stopDeployment(t, s, "gpu-stuck")
	})
}

// TestModelNotWhollyInGPUMemory: with the GPU readiness rule applied, real Ollama on this CPU-only machine loads
// the model with no bytes in GPU memory; the rule is not met on g4dn.xlarge, then on g5.xlarge (more GPU memory),
// and the ladder ends on Fargate Spot. The branch where the rule is met is in functions/steps/health_test.go.
func TestModelNotWhollyInGPUMemory(t *testing.T) {
	s := stackWithTiny(t, local.Options{ApplyGPURule: true})
	ex := deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", DeploymentID: "not-on-gpu"})
	rec := succeeded(t, ex)
	if rec.Placement != "Fargate Spot" || len(rec.Fallbacks) != 2 {
		t.Fatalf("record %+v", rec)
	}
	for i, want := range []string{"g4dn.xlarge", "g5.xlarge"} {
		if f := rec.Fallbacks[i]; f.InstanceType != want || !strings.Contains(f.Reason, "in GPU memory") {
			t.Errorf("fallback %d: %+v, want %s refused for GPU memory", i, f, want)
		}
	}
	if runs := deployment.StateRuns(ex.Events); countRuns(runs, "Release placement") != 2 {
		t.Errorf("Release placement ran %d times, want 2", countRuns(runs, "Release placement"))
	}
	if live := tasksOf(t, s, "not-on-gpu"); len(live) != 1 || aws.ToString(live[0].TaskArn) != rec.TaskArn {
		t.Errorf("live tasks %+v", live)
	}
	stopDeployment(t, s, "not-on-gpu")
}

func countRuns(runs []deployment.StateRun, name string) int {
	n := 0
	for _, r := range runs {
		if r.Name == name {
			n++
		}
	}
	return n
}

// TestUploadsInTeamFolders: models/team-a/tiny.gguf and models/team-b/tiny.gguf are two deployments of two
// models (team-a/tiny, team-b/tiny); an empty object under the prefix is refused when the event is read, and an
// empty object named as a deploy request's source is a rejected request, not an AWS error.
func TestUploadsInTeamFolders(t *testing.T) {
	s := startStack(t, local.Options{})
	var recs []record
	for _, key := range []string{"models/team-a/tiny.gguf", "models/team-b/tiny.gguf"} {
		n := len(s.Executions())
		if err := s.Upload(ctxFor(t, 10*time.Second), key, bytes.NewReader(tinyGGUF(t))); err != nil {
			t.Fatal(err)
		}
		started, err := s.WaitForExecution(ctxFor(t, 10*time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		recs = append(recs, succeeded(t, waitDone(t, s, started.ExecutionArn)))
	}
	if recs[0].Model != "team-a/tiny" || recs[1].Model != "team-b/tiny" || recs[0].DeploymentID == recs[1].DeploymentID {
		t.Fatalf("records %+v", recs)
	}
	for _, rec := range recs {
		stopDeployment(t, s, rec.DeploymentID)
	}

	n := len(s.Executions())
	if err := s.Upload(ctxFor(t, 10*time.Second), "models/empty.gguf", bytes.NewReader(nil)); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctxFor(t, 10*time.Second), n)
	if err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, s, started.ExecutionArn)
	failedWith(t, ex, "InvalidEventError", "Request rejected")
	if !strings.Contains(ex.Cause, "empty") {
		t.Errorf("cause %q", ex.Cause)
	}
	ex = deploy(t, s, events.DeployRequest{Model: "empty", Source: "s3://" + local.Bucket + "/models/empty.gguf", DeploymentID: "empty-src"})
	failedWith(t, ex, "NotGGUFError", "Request rejected")
	if !strings.Contains(ex.Cause, "empty") {
		t.Errorf("cause %q", ex.Cause)
	}
	if tasks := allTasks(t, s); len(tasks) != 2 {
		t.Errorf("%d tasks in the cluster, want the two team deployments' only", len(tasks))
	}
}

// TestFargateStorageIsSized: a Fargate task's ephemeral storage is the RunTask override the planner sized (the
// minimum of 21 GiB for a tiny model), which the local cluster, like ECS, accepts only in 21-200 GiB on Fargate.
func TestFargateStorageIsSized(t *testing.T) {
	s := stackWithTiny(t, local.Options{})
	rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "disk-sized"}))
	out, err := s.ECS.DescribeTasks(ctxFor(t, 5*time.Second), &ecs.DescribeTasksInput{Tasks: []string{rec.TaskArn}})
	if err != nil || len(out.Tasks) != 1 {
		t.Fatal(err)
	}
	o := out.Tasks[0].Overrides
	if o == nil || o.EphemeralStorage == nil || o.EphemeralStorage.SizeInGiB != 21 || out.Tasks[0].LaunchType != ecstypes.LaunchTypeFargate {
		t.Errorf("overrides %+v", o)
	}
	stopDeployment(t, s, "disk-sized")
}

// TestGPUSpot: a dev GPU deployment goes to the type's Spot capacity provider first, at the Spot price. When EC2
// reclaims the Spot instance, the kept-running deployment starts again on the on-demand provider of the same type,
// the next rung; the Spot instance has left the cluster and its group.
func TestGPUSpot(t *testing.T) {
	cfg := cloud.DefaultConfig()
	cfg.ContainerInstances = nil
	g4dn := cloud.InstanceGroup{InstanceType: "g4dn.xlarge", CPU: 4096, MemoryMiB: 14592, GPUs: 1}
	cfg.CapacityProviders = []cloud.CapacityProviderConfig{
		{Name: "gpu-g4dn", AutoScalingGroup: "asg-g4dn", Max: 1, Instance: g4dn},
		{Name: "gpu-g4dn-spot", AutoScalingGroup: "asg-g4dn-spot", Max: 1, Instance: g4dn, Spot: true},
	}
	cfg.ServiceQuotas = map[string]float64{"L-DB2E81BA": 4, "L-3819A6DF": 4}
	s := stackWithTiny(t, local.Options{Cluster: cfg})
	rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", Prefer: "gpu", KeepRunning: true, DeploymentID: "gpu-spot"}))
	g4, _ := catalog.Default().InstanceType("g4dn.xlarge")
	if rec.Placement != "EC2 Spot g4dn.xlarge" || rec.HourlyCostUSD != g4.SpotUSD {
		t.Fatalf("record %+v, want EC2 Spot g4dn.xlarge at $%.4f", rec, g4.SpotUSD)
	}
	providerOf := func(arn string) string {
		for _, task := range allTasks(t, s) {
			if aws.ToString(task.TaskArn) == arn {
				return aws.ToString(task.CapacityProviderName)
			}
		}
		return ""
	}
	if p := providerOf(rec.TaskArn); p != "gpu-g4dn-spot" {
		t.Fatalf("the task ran on capacity provider %q, want gpu-g4dn-spot", p)
	}
	n := len(s.Executions())
	if err := s.ECS.InterruptSpot(rec.TaskArn); err != nil {
		t.Fatal(err)
	}
	task, err := s.ECS.WaitStatus(ctxFor(t, 15*time.Second), rec.TaskArn, cloud.StatusStopped)
	if err != nil || !strings.Contains(aws.ToString(task.StoppedReason), "terminated") {
		t.Fatalf("interrupted task: %v, %s", err, aws.ToString(task.StoppedReason))
	}
	restart, err := s.WaitForExecution(ctxFor(t, 15*time.Second), n)
	if err != nil {
		t.Fatal(err)
	}
	again := succeeded(t, waitDone(t, s, restart.ExecutionArn))
	if again.Placement != "EC2 g4dn.xlarge" || providerOf(again.TaskArn) != "gpu-g4dn" {
		t.Errorf("restart on %s (provider %q), want the on-demand g4dn.xlarge", again.Placement, providerOf(again.TaskArn))
	}
	var fallbacks []string
	for _, f := range again.Fallbacks {
		fallbacks = append(fallbacks, f.Placement)
	}
	if len(fallbacks) != 0 {
		t.Errorf("the restart tried %v first: the interrupted Spot placement should be avoided, not tried", fallbacks)
	}
}
