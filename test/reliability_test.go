package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/lambdaapi"
	"github.com/ollama-ecs/ollama-ecs/workflow"
)

// This file holds the reliability tests of RELIABILITY.md: faults injected in the local cloud and in the local
// Lambda endpoint, duplicate and out-of-order events, each ending in a defined state with nothing left behind.

// faultyLambda is an Interceptor each test arms: fail the next calls of a function with Lambda's
// ServiceException, or run a one-shot hook before a function's next call (to make something happen at an exact
// point of a deployment).
type faultyLambda struct {
	mu    sync.Mutex
	fails map[string]int
	hooks map[string]func(ctx context.Context, st deployment.State)
	// failed counts the calls failed so far, by function.
	failed map[string]int
}

func newFaultyLambda() *faultyLambda {
	return &faultyLambda{fails: map[string]int{}, hooks: map[string]func(context.Context, deployment.State){}, failed: map[string]int{}}
}

func (f *faultyLambda) failNext(function string, n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails[function] += n
}

func (f *faultyLambda) before(function string, hook func(ctx context.Context, st deployment.State)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hooks[function] = hook
}

func (f *faultyLambda) reset() {
	f.mu.Lock()
	defer f.mu.Unlock()
	clear(f.fails)
	clear(f.hooks)
}

func (f *faultyLambda) intercept(ctx context.Context, function string, payload []byte) error {
	f.mu.Lock()
	hook := f.hooks[function]
	delete(f.hooks, function)
	fail := f.fails[function] > 0
	if fail {
		f.fails[function]--
		f.failed[function]++
	}
	f.mu.Unlock()
	if hook != nil {
		var st deployment.State
		_ = json.Unmarshal(payload, &st)
		hook(ctx, st)
	}
	if fail {
		return lambdaapi.ServiceException("injected fault: " + function + " is unavailable")
	}
	return nil
}

// deployFast starts a direct deployment like Stack.Deploy, on the same ASL, with every Retry's pause shortened to
// 50 ms: for faults that exhaust the five attempts, whose backoff (1, 2, 4, 8, 16 s with full jitter) would
// otherwise take up to half a minute per state. Nothing else changes.
func deployFast(t *testing.T, s *local.Stack, req events.DeployRequest) engine.Execution {
	t.Helper()
	if req.Source == "" {
		req.Source = tinySource
	}
	cfg := s.ECS.Config()
	def, err := workflow.LocalDefinition(cfg.Region, cfg.Account)
	if err != nil {
		t.Fatal(err)
	}
	var asl struct {
		States map[string]struct{ Type string }
	}
	if err := json.Unmarshal(def, &asl); err != nil {
		t.Fatal(err)
	}
	opts := []engine.ExecutionOption{engine.WithStateMachineName(local.StateMachine),
		engine.WithWaitOverride(local.WaitForHealth, 200*time.Millisecond)}
	for name, st := range asl.States {
		if st.Type == "Task" {
			opts = append(opts, engine.WithRetryIntervalOverride(name, 50*time.Millisecond))
		}
	}
	raw, _ := json.Marshal(req)
	arn, err := s.Engine.StartExecution(ctxFor(t, 10*time.Second), def, req.DeploymentID, json.RawMessage(raw), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return waitDone(t, s, arn)
}

// retried lists the errors a state was retried on, in order.
func retried(ex engine.Execution, state string) []string {
	var errs []string
	last := ""
	for _, ev := range ex.Events {
		if ev.StateName != state {
			continue
		}
		if ev.Error != "" {
			last = ev.Error
		}
		if ev.Type == deployment.EventStateRetried {
			e := ev.Error
			if e == "" {
				e = last
			}
			errs = append(errs, e)
		}
	}
	return errs
}

// ranState reports whether the execution visited a state.
func ranState(ex engine.Execution, state string) bool {
	for _, r := range deployment.StateRuns(ex.Events) {
		if r.Name == state {
			return true
		}
	}
	return false
}

// allTasks describes every task the local cluster knows, running or stopped, with tags.
func allTasks(t *testing.T, s *local.Stack) []ecstypes.Task {
	t.Helper()
	var tasks []ecstypes.Task
	for _, desired := range []ecstypes.DesiredStatus{ecstypes.DesiredStatusRunning, ecstypes.DesiredStatusStopped} {
		cluster := s.ECS.Config().Name
		some, err := deployment.ListTasks(ctxFor(t, 10*time.Second), s.ECS, cluster, &ecs.ListTasksInput{Cluster: aws.String(cluster), DesiredStatus: desired})
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, some...)
	}
	return tasks
}

// scheduleNames lists the schedules in the stack's group.
func scheduleNames(t *testing.T, s *local.Stack) []string {
	t.Helper()
	out, err := s.Scheduler.ListSchedules(ctxFor(t, 5*time.Second), &scheduler.ListSchedulesInput{GroupName: aws.String(local.ScheduleGroup)})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, sc := range out.Schedules {
		names = append(names, aws.ToString(sc.Name))
	}
	return names
}

// tasksStartedBy counts a deployment's tasks, stopped ones included: more than one is a duplicate.
func tasksStartedBy(t *testing.T, s *local.Stack, deploymentID string) int {
	n := 0
	for _, task := range allTasks(t, s) {
		if aws.ToString(task.StartedBy) == deploymentID {
			n++
		}
	}
	return n
}

// stopDeployment sends a Stop Request through the bus rule and checks nothing is left.
func stopDeployment(t *testing.T, s *local.Stack, deploymentID string) {
	t.Helper()
	if _, err := s.PutEvent(ctxFor(t, 30*time.Second), stopEvent(deploymentID)); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, s, deploymentID)
}

func stopEvent(deploymentID string) []byte {
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": "stop-" + deploymentID, "source": events.SourceOllamaECS,
		"detail-type": events.DetailTypeStop, "detail": map[string]any{"deploymentId": deploymentID, "requester": "reliability-test"}})
	return raw
}

func deployEvent(eventID string, detail any) []byte {
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": eventID, "source": events.SourceOllamaECS,
		"detail-type": events.DetailTypeDeploy, "account": "111122223333", "region": "us-east-1", "detail": detail})
	return raw
}

// pidAlive reports whether a process still exists (a zombie counts as gone once reaped by its parent).
func pidAlive(pid int) bool {
	return pid > 0 && syscall.Kill(pid, 0) == nil
}

func waitPIDGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for pidAlive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if pidAlive(pid) {
		t.Errorf("ollama process %d still runs", pid)
	}
}

// processOf waits for a task's container process and returns its pid.
func processOf(ctx context.Context, s *local.Stack, taskArn string) (int, error) {
	if _, err := s.ECS.WaitStatus(ctx, taskArn, cloud.StatusRunning); err != nil {
		return 0, err
	}
	for _, p := range s.ECS.Processes() {
		if p.TaskArn == taskArn {
			return p.PID, nil
		}
	}
	return 0, fmt.Errorf("task %s has no process", taskArn)
}

// TestTransientFaultsAreRetried: RunTask throttling bursts, a Fargate Spot capacity refusal, Lambda
// ServiceExceptions and scheduler throttling are absorbed by the state machine's Retry (with its real backoff) or
// its fallback ladder: the deployment succeeds with one task, and the history shows each retry.
func TestTransientFaultsAreRetried(t *testing.T) {
	faults := newFaultyLambda()
	s := stackWithTiny(t, local.Options{Interceptor: faults.intercept})
	tests := []struct {
		name  string
		arm   func()
		state string   // the state that must show the retries
		want  []string // the errors it was retried on
		check func(t *testing.T, rec record)
	}{
		{name: "RunTask throttled three times", arm: func() { s.ECS.Faults().ThrottleRunTask(3) },
			state: "Run ECS task", want: []string{"ThrottlingError", "ThrottlingError", "ThrottlingError"}},
		{name: "Lambda ServiceException twice on Poll health", arm: func() { faults.failNext("health", 2) },
			state: "Poll health", want: []string{"Lambda.ServiceException", "Lambda.ServiceException"}},
		{name: "Lambda ServiceException once on Validate request", arm: func() { faults.failNext("validate", 1) },
			state: "Validate request", want: []string{"Lambda.ServiceException"}},
		{name: "scheduler throttled twice", arm: func() { s.Scheduler.FailNextCreates(2) },
			state: "Schedule auto-stop", want: []string{"ThrottlingError", "ThrottlingError"}},
		{name: "Fargate Spot out of capacity once", arm: func() { s.ECS.Faults().RefuseRunTask(1, "") },
			check: func(t *testing.T, rec record) {
				if rec.Placement != "Fargate" || len(rec.Fallbacks) != 1 || rec.Fallbacks[0].Placement != "Fargate Spot" ||
					!strings.Contains(rec.Fallbacks[0].Reason, "Capacity is unavailable") {
					t.Errorf("placement %s, fallbacks %+v", rec.Placement, rec.Fallbacks)
				}
			}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("transient-%d", i)
			tt.arm()
			start := time.Now()
			ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id})
			rec := succeeded(t, ex)
			t.Logf("%s: succeeded in %s on %s", tt.name, time.Since(start).Round(time.Millisecond), rec.Placement)
			if tt.state != "" {
				if got := retried(ex, tt.state); strings.Join(got, ",") != strings.Join(tt.want, ",") {
					t.Errorf("%s retried on %v, want %v\n%s", tt.state, got, tt.want, deployment.RenderHistory(ex.Events))
				}
			}
			if tt.check != nil {
				tt.check(t, rec)
			}
			if n := tasksStartedBy(t, s, id); n != 1 {
				t.Errorf("%d tasks for one deployment", n)
			}
			stopDeployment(t, s, id)
		})
	}
}

// TestPersistentFaultsCleanUp: faults that outlast the retries end the deployment in a defined failure with the
// error name and cause in the history, cleaned up: no task, process or schedule.
func TestPersistentFaultsCleanUp(t *testing.T) {
	faults := newFaultyLambda()
	s := stackWithTiny(t, local.Options{Interceptor: faults.intercept})
	tests := []struct {
		name            string
		arm             func()
		wantError, last string
		// cleanup says whether the Clean up state must run (any failure from Run ECS task on), started whether a
		// task was started.
		cleanup, started bool
	}{
		{"RunTask throttled past the retries", func() { s.ECS.Faults().ThrottleRunTask(6) }, "ThrottlingError", "Deployment failed", true, false},
		// The tiny model's dev ladder has four rungs: Fargate Spot, Fargate, g4dn.xlarge, g5.xlarge.
		{"every RunTask refused: ladder exhausted", func() { s.ECS.Faults().RefuseRunTask(4, "") }, "NoCapacityError", "No capacity", false, false},
		{"Lambda down for Validate request", func() { faults.failNext("validate", 6) }, "Lambda.ServiceException", "Validate request", false, false},
		{"Lambda down for Poll health", func() { faults.failNext("health", 6) }, "Lambda.ServiceException", "Deployment failed", true, true},
		{"scheduler down: no auto-stop", func() { s.Scheduler.FailNextCreates(6) }, "ThrottlingError", "Deployment failed", true, true},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer faults.reset()
			id := fmt.Sprintf("persistent-%d", i)
			tt.arm()
			ex := deployFast(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id})
			failedWith(t, ex, tt.wantError, tt.last)
			if ex.Cause == "" {
				t.Error("no cause in the history")
			}
			if tt.cleanup != ranState(ex, "Clean up") {
				t.Errorf("Clean up ran: %v, want %v", ranState(ex, "Clean up"), tt.cleanup)
			}
			if n := tasksStartedBy(t, s, id); (n == 1) != tt.started || n > 1 {
				t.Errorf("%d tasks started, want started=%v", n, tt.started)
			}
			assertNothingLeft(t, s, id)
			t.Logf("%s: %s at %q: %s", tt.name, ex.Error, tt.last, ex.Cause)
		})
	}
	waitNoProcesses(t, s)
}

// waitNoProcesses waits until no container process is left: a stop is asynchronous (SIGTERM, grace, SIGKILL), and
// tasksOf lists only tasks whose desired status is still RUNNING.
func waitNoProcesses(t *testing.T, s *local.Stack) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(s.ECS.Processes()) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if live := s.ECS.Processes(); len(live) != 0 {
		t.Errorf("%d ollama processes left: %+v", len(live), live)
	}
}

// TestCrashAtEachStage: the task's container crashes at each lifecycle stage; the deployment fails with
// TaskStoppedError naming the stop code, and is cleaned up.
func TestCrashAtEachStage(t *testing.T) {
	s := stackWithTiny(t, local.Options{HealthTimeout: 20 * time.Second})
	stages := []struct {
		stage    cloud.Stage
		stopCode string
	}{
		{cloud.StagePending, "TaskFailedToStart"},
		{cloud.StageStarted, "EssentialContainerExited"},
		{cloud.StageFetching, "EssentialContainerExited"},
		{cloud.StageLoading, "EssentialContainerExited"},
	}
	for _, st := range stages {
		t.Run(string(st.stage), func(t *testing.T) {
			id := "crash-" + strings.ToLower(string(st.stage))
			s.ECS.Faults().CrashNextTask(st.stage)
			ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id})
			failedWith(t, ex, "TaskStoppedError", "Deployment failed")
			if !strings.Contains(ex.Cause, st.stopCode) || !ranState(ex, "Clean up") {
				t.Errorf("cause %q lacks %s, or no clean-up", ex.Cause, st.stopCode)
			}
			if n := tasksStartedBy(t, s, id); n != 1 {
				t.Errorf("%d tasks", n)
			}
			assertNothingLeft(t, s, id)
			t.Logf("crash at %s: %s", st.stage, ex.Cause)
		})
	}
	// Once loaded, the crash races the health poll that sees the model loaded: either the poll sees the stopped
	// task (failure, cleaned up) or the deployment is already ready and the task then stops on its own (ECS
	// shows it STOPPED with exit 137; nothing restarts it, the auto-stop schedule then fires harmlessly).
	t.Run(string(cloud.StageLoaded), func(t *testing.T) {
		id := "crash-loaded"
		s.ECS.Faults().CrashNextTask(cloud.StageLoaded)
		ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id, TTL: "0"})
		switch ex.Status {
		case engine.StatusFailed:
			failedWith(t, ex, "TaskStoppedError", "Deployment failed")
		case engine.StatusSucceeded:
			rec := succeeded(t, ex)
			task, err := s.ECS.WaitStatus(ctxFor(t, 10*time.Second), rec.TaskArn, cloud.StatusStopped)
			if err != nil || task.StopCode != ecstypes.TaskStopCodeEssentialContainerExited {
				t.Errorf("task after a crash once loaded: %v %s", err, task.StopCode)
			}
		default:
			t.Fatalf("status %s", ex.Status)
		}
		t.Logf("crash at LOADED: %s %s", ex.Status, ex.Error)
		assertNothingLeft(t, s, id)
	})
}

// TestProcessKilledAndHungHealth: the container of a starting task (its entry script and the real `ollama serve` it
// started) is SIGKILLed, or its process group frozen with SIGSTOP so that its health endpoint accepts connections and
// never answers. The first ends in TaskStoppedError (exit 137),
// the second in HealthTimeoutError; both are cleaned up and the process is gone.
func TestProcessKilledAndHungHealth(t *testing.T) {
	faults := newFaultyLambda()
	s := stackWithTiny(t, local.Options{Interceptor: faults.intercept, HealthTimeout: 3 * time.Second})
	tests := []struct {
		name      string
		act       func(pid int, taskArn string) error
		wantError string
		wantCause string
	}{
		{"killed while starting", func(_ int, arn string) error { return s.ECS.CrashTask(arn) }, "TaskStoppedError", "137"},
		{"health endpoint hangs", func(pid int, _ string) error { return syscall.Kill(-pid, syscall.SIGSTOP) }, "HealthTimeoutError", "STARTING_SERVER"},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := fmt.Sprintf("process-%d", i)
			pids := make(chan int, 1)
			faults.before("health", func(ctx context.Context, st deployment.State) {
				pid, err := processOf(ctx, s, st.Task.TaskArn)
				if err == nil {
					err = tt.act(pid, st.Task.TaskArn)
				}
				if err != nil {
					t.Errorf("injecting the fault: %v", err)
				}
				pids <- pid
			})
			ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: id})
			failedWith(t, ex, tt.wantError, "Deployment failed")
			if !strings.Contains(ex.Cause, tt.wantCause) || !ranState(ex, "Clean up") {
				t.Errorf("cause %q lacks %q, or no clean-up", ex.Cause, tt.wantCause)
			}
			assertNothingLeft(t, s, id)
			select {
			case pid := <-pids:
				waitPIDGone(t, pid)
			default:
				t.Error("the fault was never injected")
			}
			t.Logf("%s: %s: %s", tt.name, ex.Error, ex.Cause)
		})
	}
}

// TestSpotInterruptionAfterDeployment: a deployed Fargate Spot task is reclaimed, or crashes. The ECS Task State
// Change reaches the teardown function: the auto-stop schedule goes with the task and the task is marked
// interrupted; a kept-running deployment starts again (avoiding Fargate Spot after an interruption, on the same
// placement after a crash), and nothing else does.
func TestSpotInterruptionAfterDeployment(t *testing.T) {
	s := stackWithTiny(t, local.Options{})

	t.Run("noticed: the schedule goes with the task, nothing redeploys it", func(t *testing.T) {
		rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", TTL: "2m", DeploymentID: "spot-one"}))
		if rec.Placement != "Fargate Spot" || rec.ScheduleName == "" {
			t.Fatalf("record %+v", rec)
		}
		pid, err := processOf(ctxFor(t, 5*time.Second), s, rec.TaskArn)
		if err != nil {
			t.Fatal(err)
		}
		n := len(s.Executions())
		if err := s.ECS.InterruptSpot(rec.TaskArn); err != nil {
			t.Fatal(err)
		}
		task, err := s.ECS.WaitStatus(ctxFor(t, 15*time.Second), rec.TaskArn, cloud.StatusStopped)
		if err != nil || task.StopCode != ecstypes.TaskStopCodeSpotInterruption {
			t.Fatalf("interrupted task: %v, stop code %s", err, task.StopCode)
		}
		waitPIDGone(t, pid)
		// The ECS Task State Change reaches the teardown function, which deletes the auto-stop schedule.
		deadline := time.Now().Add(10 * time.Second)
		for len(scheduleNames(t, s)) > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := scheduleNames(t, s); len(got) != 0 {
			t.Errorf("schedules after the interruption: %v", got)
		}
		for _, task := range allTasks(t, s) {
			if aws.ToString(task.TaskArn) == rec.TaskArn && deployment.TagValue(task.Tags, deployment.TagInterrupted) != "SpotInterruption" {
				t.Errorf("the stopped task is not marked interrupted: %+v", task.Tags)
			}
		}
		if len(s.Executions()) != n || tasksStartedBy(t, s, "spot-one") != 1 {
			t.Errorf("the interruption was redeployed without keepRunning")
		}
		assertNothingLeft(t, s, "spot-one")
	})

	t.Run("kept running: started again on the next candidate with the time left", func(t *testing.T) {
		rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", TTL: "2h", KeepRunning: true, DeploymentID: "spot-keep"}))
		if rec.Placement != "Fargate Spot" {
			t.Fatalf("record %+v", rec)
		}
		restarted := func(n int) (record, events.DeployRequest) {
			t.Helper()
			restart, err := s.WaitForExecution(ctxFor(t, 15*time.Second), n)
			if err != nil {
				t.Fatal(err)
			}
			ex := waitDone(t, s, restart.ExecutionArn)
			again := succeeded(t, ex)
			var in events.DeployRequest
			if err := json.Unmarshal(ex.Input, &in); err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(ex.Name, fmt.Sprintf("spot-keep-r%d-", in.Restart)) || again.DeploymentID != "spot-keep" {
				t.Fatalf("restart %s: %+v", ex.Name, again)
			}
			return again, in
		}
		// A Spot interruption: the restart avoids Fargate Spot, with the time to live that was left.
		n := len(s.Executions())
		if err := s.ECS.InterruptSpot(rec.TaskArn); err != nil {
			t.Fatal(err)
		}
		again, in := restarted(n)
		ttl, _ := time.ParseDuration(in.TTL)
		// The time left on the schedule, which was rounded up to the minute: about two hours.
		if again.Placement != "Fargate" || again.ScheduleName == "" || len(in.Avoid) != 1 || in.Avoid[0] != "Fargate Spot" ||
			in.Restart != 1 || !in.KeepRunning || ttl < 118*time.Minute || ttl > 122*time.Minute {
			t.Errorf("first restart on %s: request %+v", again.Placement, in)
		}
		// A crash: the same placement stays open, and what was avoided before is still avoided.
		n = len(s.Executions())
		if err := s.ECS.CrashTask(again.TaskArn); err != nil {
			t.Fatal(err)
		}
		third, in := restarted(n)
		if third.Placement != "Fargate" || in.Restart != 2 || len(in.Avoid) != 1 || in.Avoid[0] != "Fargate Spot" {
			t.Errorf("second restart on %s: request %+v", third.Placement, in)
		}
		if live := tasksOf(t, s, "spot-keep"); len(live) != 1 || aws.ToString(live[0].TaskArn) != third.TaskArn {
			t.Errorf("live tasks %+v", live)
		}
		// A stop request is a UserInitiated stop: no restart.
		n = len(s.Executions())
		stopDeployment(t, s, "spot-keep")
		s.Settle()
		if got := len(s.Executions()); got != n {
			t.Errorf("%d executions after the stop, want %d", got, n)
		}
	})
}

// TestOutOfOrderAndDuplicateEvents: stop requests before, during and after their deployment, a scheduled
// teardown during a deployment, and duplicate deliveries, each ending in a defined state with one task at most.
func TestOutOfOrderAndDuplicateEvents(t *testing.T) {
	faults := newFaultyLambda()
	s := stackWithTiny(t, local.Options{Interceptor: faults.intercept})

	t.Run("stop before its deploy is a no-op; the deploy then runs", func(t *testing.T) {
		routed, err := s.PutEvent(ctxFor(t, 10*time.Second), stopEvent("early-stop"))
		if err != nil || routed.Stopped == nil || len(routed.Stopped.Tasks) != 0 {
			t.Fatalf("early stop: %+v %v", routed.Stopped, err)
		}
		succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "early-stop"}))
		stopDeployment(t, s, "early-stop")
	})

	midway := []struct{ name, id string }{
		{"stop request while its deploy polls health", "stop-mid"},
		{"scheduled teardown while a dev deploy polls health", "teardown-mid"},
	}
	for _, tt := range midway {
		t.Run(tt.name, func(t *testing.T) {
			var stopped *deployment.Stopped
			faults.before("health", func(ctx context.Context, st deployment.State) {
				if _, err := processOf(ctx, s, st.Task.TaskArn); err != nil {
					t.Error(err)
				}
				raw := stopEvent(tt.id)
				if tt.id == "teardown-mid" {
					raw, _ = events.Sample(events.KindTeardown)
				}
				routed, err := s.PutEvent(ctx, raw)
				if err != nil {
					t.Error(err)
				}
				stopped = routed.Stopped
			})
			ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: tt.id})
			failedWith(t, ex, "TaskStoppedError", "Deployment failed")
			if stopped == nil || len(stopped.Tasks) != 1 || !strings.Contains(ex.Cause, "UserInitiated") {
				t.Errorf("stopped %+v; cause %s", stopped, ex.Cause)
			}
			assertNothingLeft(t, s, tt.id)
			t.Logf("%s: %s: %s", tt.name, ex.Error, ex.Cause)
		})
	}

	t.Run("stop request between health and auto-stop leaves no schedule", func(t *testing.T) {
		faults.before("autostop", func(ctx context.Context, st deployment.State) {
			if _, err := s.PutEvent(ctx, stopEvent("stop-late")); err != nil {
				t.Error(err)
			}
		})
		ex := deploy(t, s, events.DeployRequest{Model: "tiny", DeploymentID: "stop-late"})
		t.Logf("stop before Schedule auto-stop: %s %s; schedules %v", ex.Status, ex.Error, scheduleNames(t, s))
		// A deployment stopped before it was recorded must not report success with a live schedule.
		failedWith(t, ex, "TaskStoppedError", "Deployment failed")
		assertNothingLeft(t, s, "stop-late")
	})

	t.Run("redelivered deploy event after a stop does not resurrect it", func(t *testing.T) {
		raw := deployEvent("redelivered-1", map[string]any{"model": "tiny", "source": tinySource, "deploymentId": "redeliver"})
		routed, err := s.PutEvent(ctxFor(t, 10*time.Second), raw)
		if err != nil {
			t.Fatal(err)
		}
		succeeded(t, waitDone(t, s, routed.ExecutionArn))
		stopDeployment(t, s, "redeliver")
		routed, err = s.PutEvent(ctxFor(t, 10*time.Second), raw)
		if err != nil {
			t.Fatal(err)
		}
		// The late copy is another execution: ECS refuses the deployment's client token under its parameters
		// (ConflictException), so it fails on its own instead of starting a second task.
		ex := waitDone(t, s, routed.ExecutionArn)
		failedWith(t, ex, "DeploymentExistsError", "Deployment exists")
		if !strings.Contains(ex.Cause, "client token") {
			t.Errorf("cause %q", ex.Cause)
		}
		if n := tasksStartedBy(t, s, "redeliver"); n != 1 {
			t.Errorf("%d tasks for one deployment", n)
		}
		assertNothingLeft(t, s, "redeliver")
	})

	t.Run("the same direct request twice at once is one execution and one task", func(t *testing.T) {
		req := events.DeployRequest{Model: "tiny", Source: tinySource, DeploymentID: "twice"}
		arns := make([]string, 2)
		errs := make([]error, 2)
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Go(func() { arns[i], errs[i] = s.Deploy(ctxFor(t, 10*time.Second), req) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil || arns[0] != arns[1] {
			t.Fatalf("arns %v, errors %v", arns, err)
		}
		succeeded(t, waitDone(t, s, arns[0]))
		if n := tasksStartedBy(t, s, "twice"); n != 1 {
			t.Errorf("%d tasks", n)
		}
		stopDeployment(t, s, "twice")
	})

	t.Run("an upload event delivered twice is one deployment", func(t *testing.T) {
		n := len(s.Executions())
		if err := s.Upload(ctxFor(t, 10*time.Second), "models/twice.gguf", bytes.NewReader(tinyGGUF(t))); err != nil {
			t.Fatal(err)
		}
		first, err := s.WaitForExecution(ctxFor(t, 10*time.Second), n)
		if err != nil {
			t.Fatal(err)
		}
		ex1, err := s.Engine.Describe(ctxFor(t, 5*time.Second), first.ExecutionArn)
		if err != nil {
			t.Fatal(err)
		}
		again, err := s.PutEvent(ctxFor(t, 10*time.Second), ex1.Input)
		if err != nil {
			t.Fatal(err)
		}
		// The second delivery is a second execution: the two race to RunTask, and the one that comes second finds the
		// other's task (or its client token) and fails on its own, leaving the other deployment as it is.
		exs := []engine.Execution{waitDone(t, s, first.ExecutionArn), waitDone(t, s, again.ExecutionArn)}
		if exs[0].Status != engine.StatusSucceeded {
			exs[0], exs[1] = exs[1], exs[0]
		}
		a := succeeded(t, exs[0])
		failedWith(t, exs[1], "DeploymentExistsError", "Deployment exists")
		if live := tasksOf(t, s, a.DeploymentID); len(live) != 1 || aws.ToString(live[0].TaskArn) != a.TaskArn ||
			tasksStartedBy(t, s, a.DeploymentID) != 1 {
			t.Errorf("two deliveries of %s: live %+v", a.DeploymentID, live)
		}
		stopDeployment(t, s, a.DeploymentID)
	})
}
