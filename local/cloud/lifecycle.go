package cloud

import (
	"context"
	"encoding/json"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"
)

// run takes a task through PROVISIONING → PENDING → RUNNING → STOPPED.
func (e *ECS) run(t *task) {
	defer e.wg.Done()
	if t.awaitingInstance {
		<-t.stopCh // no instance ever comes; only a stop ends the wait
		e.finish(t, "", "", nil)
		return
	}
	if !e.wait(t, e.opts.ProvisioningDelay+t.extraDelay) {
		e.finish(t, "", "", nil)
		return
	}
	e.setStatus(t, StatusPending)
	if t.crashAt == StagePending {
		e.stage(t, StagePending)
		e.finish(t, ecstypes.TaskStopCodeTaskFailedToStart, "CannotStartContainerError: injected fault: the container failed to start", nil)
		return
	}
	if t.hang {
		<-t.stopCh // a hung task never starts; only a stop ends it
		e.finish(t, "", "", nil)
		return
	}
	if !e.wait(t, e.opts.PendingDelay) {
		e.finish(t, "", "", nil)
		return
	}
	ctx, cancel := context.WithCancel(e.ctx)
	defer cancel()
	go func() {
		select {
		case <-t.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	e.mu.Lock()
	c := Container{TaskArn: t.arn, Image: t.image, Env: t.env, FetchEnv: t.fetchEnv, GPUIDs: t.gpus, Stage: func(s Stage) bool { return e.stage(t, s) }}
	now := e.opts.Now()
	t.pullStartedAt = &now
	e.mu.Unlock()

	proc, err := e.opts.Runner.Start(ctx, c)
	if err != nil {
		reason := err.Error()
		if !strings.HasPrefix(reason, "Cannot") { // the runner may name the error itself (CannotPullContainerError)
			reason = "CannotStartContainerError: " + reason
		}
		e.finish(t, ecstypes.TaskStopCodeTaskFailedToStart, reason, nil)
		return
	}
	e.mu.Lock()
	now = e.opts.Now()
	t.proc, t.pullStoppedAt, t.startedAt, t.connectivityAt = proc, &now, &now, &now
	if t.inst != nil {
		t.inst.pending--
		t.inst.running++
	}
	e.mu.Unlock()
	e.setStatus(t, StatusRunning)
	if e.stage(t, StageStarted) {
		proc.Kill()
	}

	select {
	case <-proc.Exited():
	case <-t.stopCh:
	}
	stopCtx, stop := context.WithTimeout(context.Background(), e.opts.StopTimeout)
	defer stop()
	if err := proc.Stop(stopCtx); err != nil {
		e.log.Warn("stopping a task's container", "task", t.arn, "error", err)
	}
	code := int32(proc.ExitCode())
	e.mu.Lock()
	t.containerReason = proc.Reason()
	e.mu.Unlock()
	// The exit came first unless a stop was asked for: then the stop's code and reason stand.
	e.finish(t, ecstypes.TaskStopCodeEssentialContainerExited, "Essential container in task exited", &code)
}

// wait sleeps d unless the task is asked to stop first, which it reports as false.
func (e *ECS) wait(t *task, d time.Duration) bool {
	if d <= 0 {
		select {
		case <-t.stopCh:
			return false
		default:
			return true
		}
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-t.stopCh:
		return false
	case <-timer.C:
		return true
	}
}

// stage records a container stage and reports whether a fault asks to crash there.
func (e *ECS) stage(t *task, s Stage) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.stage = s
	return t.crashAt == s
}

func (e *ECS) setStatus(t *task, status string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	t.lastStatus = status
	t.version++
	e.log.Info("task status", "task", t.arn, "status", status)
}

// finish marks the task STOPPED and releases its resources. code and reason apply unless a stop request set
// them already; exitCode is the container's, if it ran.
func (e *ECS) finish(t *task, code ecstypes.TaskStopCode, reason string, exitCode *int32) {
	var event []byte
	defer func() {
		if event != nil && e.opts.OnTaskStopped != nil {
			e.opts.OnTaskStopped(event)
		}
	}()
	e.mu.Lock()
	defer e.mu.Unlock()
	now := e.opts.Now()
	if t.stopCode == "" {
		t.stopCode, t.stoppedReason = code, reason
	}
	if t.stoppingAt == nil {
		t.stoppingAt = &now
	}
	if code == ecstypes.TaskStopCodeTaskFailedToStart && t.containerReason == "" {
		t.containerReason = reason
	}
	t.exitCode = exitCode
	t.desiredStatus, t.lastStatus, t.stoppedAt = StatusStopped, StatusStopped, &now
	t.version++
	e.release(t)
	e.log.Info("task status", "task", t.arn, "status", StatusStopped, "stopCode", t.stopCode,
		"reason", t.stoppedReason, "exitCode", aws.ToInt32(exitCode), "containerReason", t.containerReason)
	close(t.done)
	event = e.taskStateChange(t)
}

// taskStateChange renders the event ECS sends when a task changes state; the caller holds mu.
func (e *ECS) taskStateChange(t *task) []byte {
	snap := e.snapshot(t, false)
	detail := map[string]any{
		"clusterArn": e.clusterArn, "taskArn": t.arn, "taskDefinitionArn": aws.ToString(snap.TaskDefinitionArn),
		"lastStatus": t.lastStatus, "desiredStatus": t.desiredStatus, "stopCode": string(t.stopCode),
		"stoppedReason": t.stoppedReason, "startedBy": t.startedBy, "group": t.group, "launchType": string(t.launchType),
		"capacityProviderName": t.capacityProvider, "version": t.version,
	}
	raw, _ := json.Marshal(map[string]any{
		"version": "0", "id": randomHex(16), "detail-type": "ECS Task State Change", "source": "aws.ecs",
		"account": e.cfg.Account, "time": e.opts.Now().UTC().Format(time.RFC3339), "region": e.cfg.Region,
		"resources": []string{t.arn}, "detail": detail,
	})
	return raw
}
