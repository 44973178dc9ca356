package deployment

import (
	"encoding/json"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/smithy-go"
)

// AutoStopResult says when the deployment stops by itself.
type AutoStopResult struct {
	ScheduleName string `json:"scheduleName"`
	// StopAt is the schedule's time, RFC 3339 in UTC.
	StopAt string `json:"stopAt"`
}

// AutoStopCheck is an auto-stop schedule's payload, which the schedule hands to the stop (teardown) function when
// the deployment's time to live is up: the function looks at the deployment's requests over the last IdleSeconds
// (the load balancer's metrics for TargetGroup) and stops the deployment only if it was idle, or once StopBy (its
// maximum lifetime) has passed; else it moves the schedule on by one idle window.
type AutoStopCheck struct {
	DeploymentID string `json:"deploymentId"`
	Execution    string `json:"execution"`
	// Task is what the schedule stops: the task, or a prod deployment's service.
	Task        string `json:"Task"`
	TargetGroup string `json:"targetGroup,omitempty"`
	IdleSeconds int    `json:"idleSeconds"`
	// StopBy is the deployment's maximum lifetime, RFC 3339.
	StopBy string `json:"stopBy"`
	Reason string `json:"reason"`
}

// AutoStopPayload wraps the check, so the stop function tells it from its other inputs.
type AutoStopPayload struct {
	AutoStop *AutoStopCheck `json:"autoStop"`
}

// AutoStopDecision is what the stop function did at a deployment's auto-stop time.
type AutoStopDecision struct {
	DeploymentID string `json:"deploymentId"`
	// Requests are those the load balancer counted in the idle window; LastUse the last minute with any.
	Requests int    `json:"requests"`
	LastUse  string `json:"lastUse,omitempty"`
	// Postponed is true when the deployment was in use: NextCheck is the schedule's new time.
	Postponed bool   `json:"postponed"`
	NextCheck string `json:"nextCheck,omitempty"`
	Why       string `json:"why"`
}

// ScheduleTarget is the task (or service) an auto-stop schedule stops, read from its payload ("" if unreadable).
func ScheduleTarget(got *scheduler.GetScheduleOutput) string {
	if got == nil || got.Target == nil {
		return ""
	}
	var in AutoStopPayload
	if json.Unmarshal([]byte(aws.ToString(got.Target.Input)), &in) != nil || in.AutoStop == nil {
		return ""
	}
	return in.AutoStop.Task
}

func IsCode(err error, code string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == code
}
