package local

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"
	"github.com/aws/smithy-go"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

// executions is the Step Functions API over the local engine, as the teardown function uses it to restart a
// deployment: an execution started here runs the same definition, with the same local settings, as one started
// by an event.
type executions struct{ s *Stack }

var _ deployment.Executions = executions{}

func (x executions) DescribeExecution(ctx context.Context, in *sfn.DescribeExecutionInput, _ ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error) {
	ex, err := x.s.Engine.Describe(ctx, x.s.engineArn(aws.ToString(in.ExecutionArn)))
	if err != nil {
		return nil, apiError(err)
	}
	out := &sfn.DescribeExecutionOutput{ExecutionArn: aws.String(ex.ExecutionArn), Name: aws.String(ex.Name),
		Status: sfntypes.ExecutionStatus(ex.Status), Input: aws.String(string(ex.Input)), StartDate: aws.Time(ex.StartDate)}
	if ex.Error != "" {
		out.Error, out.Cause = aws.String(ex.Error), aws.String(ex.Cause)
	}
	return out, nil
}

func (x executions) StartExecution(ctx context.Context, in *sfn.StartExecutionInput, _ ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error) {
	if arn := aws.ToString(in.StateMachineArn); !strings.HasSuffix(arn, ":stateMachine:"+StateMachine) {
		return nil, &smithy.GenericAPIError{Code: "StateMachineDoesNotExist", Message: "no state machine " + arn}
	}
	arn, err := x.s.start(ctx, aws.ToString(in.Name), json.RawMessage(aws.ToString(in.Input)), events.KindDirect)
	if err != nil {
		return nil, apiError(err)
	}
	return &sfn.StartExecutionOutput{ExecutionArn: aws.String(arn)}, nil
}

// apiError gives an engine refusal the Step Functions error code the handlers classify by.
func apiError(err error) error {
	var e *engine.APIError
	if errors.As(err, &e) {
		return &smithy.GenericAPIError{Code: e.Type, Message: e.Message}
	}
	return err
}

// engineArn is the engine's ARN of an execution named in an ARN of the stack's account (the engine keeps its own
// account in the ARNs it makes): the execution of that name the stack started, else the ARN as given.
func (s *Stack) engineArn(arn string) string {
	name := arn[strings.LastIndex(arn, ":")+1:]
	for _, ex := range s.Executions() {
		if strings.HasSuffix(ex.ExecutionArn, ":"+name) {
			return ex.ExecutionArn
		}
	}
	return arn
}
