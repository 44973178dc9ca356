package engine

import (
	"encoding/json"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// Status is an execution's status, spelled as Step Functions spells it.
type Status string

// Execution statuses.
const (
	StatusRunning   Status = "RUNNING"
	StatusSucceeded Status = "SUCCEEDED"
	StatusFailed    Status = "FAILED"
	StatusAborted   Status = "ABORTED"
	StatusTimedOut  Status = "TIMED_OUT"
)

// Execution is one run of a state machine, like DescribeExecution's answer
// plus its history.
type Execution struct {
	ExecutionArn    string          `json:"executionArn"`
	StateMachineArn string          `json:"stateMachineArn"`
	Name            string          `json:"name"`
	Status          Status          `json:"status"`
	Input           json.RawMessage `json:"input,omitempty"`
	Output          json.RawMessage `json:"output,omitempty"` // set when SUCCEEDED
	Error           string          `json:"error,omitempty"`  // set when FAILED or TIMED_OUT
	Cause           string          `json:"cause,omitempty"`
	StartDate       time.Time       `json:"startDate"`
	StopDate        time.Time       `json:"stopDate,omitzero"` // zero while RUNNING
	// Events is the history; empty in List results.
	Events []deployment.HistoryEvent `json:"events,omitempty"`
}

// Done reports whether the execution has finished, whatever the outcome.
func (x Execution) Done() bool { return x.Status != "" && x.Status != StatusRunning }
