package deployment

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/aws/smithy-go"
)

// The errors below are the state machine's API: each type's name is an ErrorEquals entry in
// workflow/deploy.asl.json, because aws-lambda-go reports a returned error's type name as its errorType. Handlers
// return them unwrapped. The planner's and catalog's typed errors (UnknownModelError, ModelTooLargeError,
// GPUOnFargateError, InvalidRequestError, UnknownInstanceTypeError) travel the same way.

// InvalidEventError is input that does not parse: the message names the field and the rule.
type InvalidEventError struct{ Reason string }

func (e *InvalidEventError) Error() string { return e.Reason }

// IncompleteStateError is a wiring fault, not bad input: a step was handed a state without what the steps before it
// put there (a changed definition, a state edited by hand). It is never "Request rejected".
type IncompleteStateError struct{ Step, Missing string }

func (e *IncompleteStateError) Error() string {
	return fmt.Sprintf("%s was given a state without %s: the state machine and its steps disagree", e.Step, e.Missing)
}

// NotGGUFError is an upload that is not a usable GGUF model file.
type NotGGUFError struct {
	Key    string
	Reason string
}

func (e *NotGGUFError) Error() string {
	return fmt.Sprintf("%s is not a usable GGUF model: %s", e.Key, e.Reason)
}

// Attempt is one rung of the fallback ladder that was tried and refused.
type Attempt struct {
	Placement    string `json:"placement"`
	InstanceType string `json:"instanceType"`
	Reason       string `json:"reason"`
}

// NoCapacityError means every candidate was tried; Attempts says why each was refused.
type NoCapacityError struct{ Attempts []Attempt }

func (e *NoCapacityError) Error() string {
	parts := make([]string, 0, len(e.Attempts))
	for _, a := range e.Attempts {
		parts = append(parts, a.Placement+": "+a.Reason)
	}
	return fmt.Sprintf("no capacity for any of %d candidates: %s", len(e.Attempts), strings.Join(parts, "; "))
}

// CapacityError means ECS could not place the task on this candidate (RunTask failures such as RESOURCE:GPU, or
// no task and no reason); the state machine moves to the next candidate.
type CapacityError struct{ Reason string }

func (e *CapacityError) Error() string { return "no capacity: " + e.Reason }

// DeploymentExistsError means another request holds this deployment id: a task of that id is still running, or
// ECS refused the client token, used by another request in the last 24 hours. Nothing of the other deployment is
// touched; before RunTask the state machine fails without cleaning up.
type DeploymentExistsError struct {
	DeploymentID string
	// Tasks are the other request's tasks, as ECS or the task listing named them.
	Tasks  []string
	Reason string
}

func (e *DeploymentExistsError) Error() string {
	msg := fmt.Sprintf("deployment id %s is taken: %s", e.DeploymentID, e.Reason)
	if len(e.Tasks) > 0 {
		msg += " (tasks " + strings.Join(e.Tasks, ", ") + ")"
	}
	return msg
}

// ThrottlingError is an AWS API throttle; the state machine retries it with backoff.
type ThrottlingError struct{ Op, Message string }

func (e *ThrottlingError) Error() string { return e.Op + " throttled: " + e.Message }

// AWSServiceError is a server-side AWS failure (5xx); retried like throttling.
type AWSServiceError struct{ Op, Code, Message string }

func (e *AWSServiceError) Error() string { return fmt.Sprintf("%s: %s: %s", e.Op, e.Code, e.Message) }

// AWSRequestError is an AWS API refusal that retrying will not cure (permissions, bad parameters).
type AWSRequestError struct{ Op, Code, Message string }

func (e *AWSRequestError) Error() string { return fmt.Sprintf("%s: %s: %s", e.Op, e.Code, e.Message) }

// TaskStoppedError means the task stopped before it was healthy: the stop code, reason and exit code say why.
type TaskStoppedError struct {
	TaskArn, StopCode, Reason string
	ExitCode                  *int32
}

func (e *TaskStoppedError) Error() string {
	msg := fmt.Sprintf("task %s stopped (%s): %s", e.TaskArn, e.StopCode, e.Reason)
	if e.ExitCode != nil {
		msg += fmt.Sprintf("; ollama exited with code %d", *e.ExitCode)
	}
	return msg
}

// HealthTimeoutError means the deployment did not become healthy in time; Phase is where it was stuck.
type HealthTimeoutError struct{ Phase, Detail string }

func (e *HealthTimeoutError) Error() string {
	return fmt.Sprintf("not healthy in time: still %s (%s)", e.Phase, e.Detail)
}

// ModelNotOnGPUError means a GPU placement loaded the model only partly into GPU memory: it fell back to the CPU.
type ModelNotOnGPUError struct {
	Model          string
	Size, SizeVRAM int64
}

func (e *ModelNotOnGPUError) Error() string {
	return fmt.Sprintf("%s loaded with %d of %d bytes in GPU memory: it fell back to the CPU", e.Model, e.SizeVRAM, e.Size)
}

// awsError classifies an SDK error by its API error code into the typed errors above, so the state machine can
// retry throttling and server errors and fail fast on the rest.
func AWSError(op string, err error) error {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return &AWSServiceError{Op: op, Code: "RequestFailed", Message: err.Error()}
	}
	code, msg := api.ErrorCode(), api.ErrorMessage()
	switch code {
	case "ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded",
		"ProvisionedThroughputExceededException", "SlowDown":
		return &ThrottlingError{Op: op, Message: msg}
	case "ServerException", "InternalFailure", "InternalServerError", "ServiceUnavailable", "InternalError":
		return &AWSServiceError{Op: op, Code: code, Message: msg}
	case "ClientException":
		// ECS answers a cluster with no container instances this way: a capacity problem, not a bad request.
		if strings.Contains(msg, "No Container Instances were found") {
			return &CapacityError{Reason: msg}
		}
	}
	if api.ErrorFault() == smithy.FaultServer {
		return &AWSServiceError{Op: op, Code: code, Message: msg}
	}
	return &AWSRequestError{Op: op, Code: code, Message: msg}
}

// isNotFound reports an API error that means the thing is already gone.
func IsNotFound(err error) bool {
	var api smithy.APIError
	if !errors.As(err, &api) {
		return false
	}
	switch api.ErrorCode() {
	case "ResourceNotFoundException", "NotFound", "NoSuchKey":
		return true
	case "InvalidParameterException":
		// ECS says a task ARN it no longer knows is an invalid parameter.
		return strings.Contains(api.ErrorMessage(), "not found")
	}
	return false
}

// ImageBuildInProgressError means another execution is building this model's image: the state machine retries
// the step until that build is done (and, if it outlasts the retries, the task pulls its model at start).
type ImageBuildInProgressError struct {
	Image, Holder string
	Since         time.Time
}

func (e *ImageBuildInProgressError) Error() string {
	return fmt.Sprintf("%s is being built by %s (since %s); waiting for that build", e.Image, e.Holder, e.Since.UTC().Format(time.RFC3339))
}
