package engine

import (
	"encoding/json"
	"time"
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
	Events []HistoryEvent `json:"events,omitempty"`
}

// Done reports whether the execution has finished, whatever the outcome.
func (x Execution) Done() bool { return x.Status != "" && x.Status != StatusRunning }

// HistoryEvent is one entry of an execution's history, taken from the engine's
// event log. Types: ExecutionStarted, ExecutionSucceeded, ExecutionFailed,
// ExecutionAborted, ExecutionTimeout, StateEntered, StateExited, StateFailed,
// StateRetried, StateCaught, MapIterationStarted/Succeeded/Failed and
// ParallelBranchStarted/Succeeded/Failed.
type HistoryEvent struct {
	// Index is the 1-based position in the history, like a Step Functions
	// history event id.
	Index     int       `json:"index"`
	Type      string    `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	// StateName and StateType name the state (for Map and Parallel events,
	// the Map or Parallel state).
	StateName string          `json:"stateName,omitempty"`
	StateType string          `json:"stateType,omitempty"`
	Input     json.RawMessage `json:"input,omitempty"`
	Output    json.RawMessage `json:"output,omitempty"`
	// Error and Cause are set on StateFailed, ExecutionFailed and the
	// *Failed events of Map iterations and Parallel branches.
	Error string `json:"error,omitempty"`
	Cause string `json:"cause,omitempty"`
	// RetryAttempt counts retries of this state by the matching retrier
	// (1 for the first retry); set on StateRetried.
	RetryAttempt int `json:"retryAttempt,omitempty"`
	// ErrorEquals is the matching retrier's or catcher's list, on
	// StateRetried and StateCaught.
	ErrorEquals []string `json:"errorEquals,omitempty"`
	// MapIteration is the item index for events inside a Map state.
	MapIteration *int `json:"mapIteration,omitempty"`
}

// History event types that the renderer and callers look for.
const (
	EventExecutionStarted = "ExecutionStarted"
	EventStateEntered     = "StateEntered"
	EventStateExited      = "StateExited"
	EventStateFailed      = "StateFailed"
	EventStateRetried     = "StateRetried"
	EventStateCaught      = "StateCaught"
)
