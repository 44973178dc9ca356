package deployment

import (
	"encoding/json"
	"errors"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/scheduler"
	"github.com/aws/smithy-go"
)

// StopTaskTarget is EventBridge Scheduler's universal target for ECS StopTask: the schedule stops the task itself,
// with no Lambda in between.
const StopTaskTarget = "arn:aws:scheduler:::aws-sdk:ecs:stopTask"

// AutoStopResult says when the deployment stops by itself.
type AutoStopResult struct {
	ScheduleName string `json:"scheduleName"`
	// StopAt is the schedule's time, RFC 3339 in UTC.
	StopAt string `json:"stopAt"`
}

// StopTaskInput is the schedule's payload: the StopTask request, in the API's own field names.
type StopTaskInput struct {
	Cluster string `json:"Cluster"`
	Task    string `json:"Task"`
	Reason  string `json:"Reason"`
}

// scheduleTarget is the task an auto-stop schedule stops, read from its StopTask payload ("" if unreadable).
func ScheduleTarget(got *scheduler.GetScheduleOutput) string {
	if got == nil || got.Target == nil {
		return ""
	}
	var in StopTaskInput
	if json.Unmarshal([]byte(aws.ToString(got.Target.Input)), &in) != nil {
		return ""
	}
	return in.Task
}

func IsCode(err error, code string) bool {
	var api smithy.APIError
	return errors.As(err, &api) && api.ErrorCode() == code
}
