package steps

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/aws/aws-lambda-go/cfn"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

// Cleanup runs after any failure once a task may have started: it stops the tasks its own execution started and
// deletes the schedule that would stop them, so nothing is left running or scheduled, and the state machine then
// fails with the original error. A task or schedule another request made under the same deployment id is never
// touched.
type Cleanup struct{ Stopper *deployment.Stopper }

func (c *Cleanup) Handle(ctx context.Context, s deployment.State) (deployment.Stopped, error) {
	if s.Request == nil {
		return deployment.Stopped{}, &deployment.IncompleteStateError{Step: "Clean up", Missing: "a request"}
	}
	reason := "ollama-ecs cleanup after a failed deployment"
	switch {
	case s.Error != nil:
		reason += ": " + s.Error.Error
	case s.Capacity != nil && s.Capacity.LastError != nil:
		// "Release placement": the candidate was refused after its task started; the ladder goes on.
		reason = "ollama-ecs releases a refused placement: " + s.Capacity.LastError.Error
	}
	known := ""
	if s.Task != nil {
		known = cmp.Or(s.Task.ServiceArn, s.Task.TaskArn)
	}
	return c.Stopper.StopExecution(ctx, s.Request.DeploymentID, s.Request.ExecutionName, known, reason, deployment.Failed)
}

// StackResourceID is the physical id of the stack's stop-on-delete custom resource.
const StackResourceID = "ollama-ecs-stop-deployments-on-delete"

// stackEvent answers the stack's custom resource (CloudFormation invokes the function directly and waits for the
// answer at the event's ResponseURL). Its deletion, which comes before the capacity providers' and groups', stops
// every deployment: a running standalone task would hold its instance's termination (managed draining) and the
// stack's deletion with it.
func (t *Teardown) stackEvent(ctx context.Context, raw TeardownInput) (deployment.Stopped, error) {
	var ev cfn.Event
	if err := json.Unmarshal(raw, &ev); err != nil {
		return deployment.Stopped{}, &deployment.InvalidEventError{Reason: "a CloudFormation custom resource event: " + err.Error()}
	}
	var out deployment.Stopped
	reason, err := cfn.LambdaWrap(func(ctx context.Context, ev cfn.Event) (string, map[string]interface{}, error) {
		if ev.RequestType != cfn.RequestDelete {
			return StackResourceID, nil, nil
		}
		dev, err := t.Stopper.StopEnv(ctx, "dev", "ollama-ecs stack deleted", deployment.Forget)
		if err != nil {
			return StackResourceID, nil, err
		}
		prod, err := t.Stopper.StopEnv(ctx, "prod", "ollama-ecs stack deleted", deployment.Forget)
		out = deployment.Stopped{Deployments: append(dev.Deployments, prod.Deployments...), Tasks: append(dev.Tasks, prod.Tasks...),
			Schedules: append(dev.Schedules, prod.Schedules...)}
		if err != nil || t.Stopper.Routes == nil {
			return StackResourceID, nil, err
		}
		// Sleeping deployments run nothing, but their rules hold the listener and the waker's target group.
		forgotten, err := t.Stopper.Routes.ForgetSleeping(ctx)
		out.Deployments = append(out.Deployments, forgotten...)
		return StackResourceID, nil, err
	})(ctx, ev)
	if err != nil {
		// The answer could not be sent: CloudFormation would wait an hour for it. Lambda retries a failed
		// asynchronous invocation.
		return out, &deployment.AWSServiceError{Op: "cloudformation:response", Code: "ResponseNotSent", Message: reason}
	}
	return out, nil
}

// TeardownInput is what the teardown function receives: a Scheduled Event (stop every dev deployment), a Stop
// Request from the bus, or a direct {"deploymentId": ...} or {"env": ...}.
type TeardownInput = json.RawMessage

// Teardown stops deployments on request: all dev deployments on the schedule, one deployment on a stop request;
// and it hears the cluster's stopped tasks (ECS Task State Change) to notice a deployment that died on its own.
type Teardown struct {
	Stopper *deployment.Stopper
	// Interrupted handles task state changes; nil refuses them.
	Interrupted *Interrupted
	// Usage reads a deployment's requests for an auto-stop check (nil: the check stops at the time to live).
	Usage *UsageReader
	Now   func() time.Time
}

func (t *Teardown) Handle(ctx context.Context, raw TeardownInput) (deployment.Stopped, error) {
	var stack struct{ RequestType, ResponseURL string }
	if json.Unmarshal(raw, &stack) == nil && stack.RequestType != "" && stack.ResponseURL != "" {
		return t.stackEvent(ctx, raw)
	}
	var direct struct {
		DeploymentID string                    `json:"deploymentId"`
		Env          string                    `json:"env"`
		Forget       bool                      `json:"forget"`
		AutoStop     *deployment.AutoStopCheck `json:"autoStop"`
	}
	err := json.Unmarshal(raw, &direct)
	if err == nil && direct.AutoStop != nil {
		return t.autoStop(ctx, direct.AutoStop)
	}
	if err == nil && (direct.DeploymentID != "" || direct.Env != "") {
		if direct.DeploymentID != "" {
			if !events.ValidDeploymentID(direct.DeploymentID) {
				return deployment.Stopped{}, &deployment.InvalidEventError{Reason: fmt.Sprintf("%q is not a deployment id", direct.DeploymentID)}
			}
			return t.Stopper.StopDeployment(ctx, direct.DeploymentID, "ollama-ecs stop request", ending(direct.Forget))
		}
		if direct.Env != "dev" && direct.Env != "prod" {
			return deployment.Stopped{}, &deployment.InvalidEventError{Reason: fmt.Sprintf("env %q is not dev or prod", direct.Env)}
		}
		return t.Stopper.StopEnv(ctx, direct.Env, "ollama-ecs teardown of env "+direct.Env, ending(direct.Forget))
	}
	in, err := events.Parse(raw, events.Config{}, "")
	if err != nil {
		return deployment.Stopped{}, &deployment.InvalidEventError{Reason: err.Error()}
	}
	switch in.Kind {
	case events.KindTeardown:
		return t.Stopper.StopEnv(ctx, "dev", "ollama-ecs scheduled dev teardown", deployment.Sleep)
	case events.KindTaskStopped:
		if t.Interrupted == nil {
			return deployment.Stopped{}, &deployment.InvalidEventError{Reason: "this function is not configured for task state changes"}
		}
		res, err := t.Interrupted.Handle(ctx, in.TaskStopped)
		out := deployment.Stopped{Deployments: []string{}, Tasks: []string{}, Schedules: []string{}, Interrupted: &res}
		if res.ScheduleDeleted != "" {
			out.Schedules = append(out.Schedules, res.ScheduleDeleted)
		}
		return out, err
	case events.KindStop:
		reason := "ollama-ecs stop request"
		if in.Stop.Requester != "" {
			reason += " from " + in.Stop.Requester
		}
		return t.Stopper.StopDeployment(ctx, in.DeploymentID, reason, ending(in.Stop.Forget))
	}
	return deployment.Stopped{}, &deployment.InvalidEventError{Reason: fmt.Sprintf("a %s event is not a stop or teardown", in.Kind)}
}

// ending is a stop's Ending: forget, or keep the endpoint of a deployment that wakes on request.
func ending(forget bool) deployment.Ending {
	if forget {
		return deployment.Forget
	}
	return deployment.Sleep
}
