package deployment

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// StateRun is one visit of a state, as a row of the Step Functions console's
// "Table view": a state that runs again (a polling loop) gets a new row,
// retries of one visit stay in the same row.
type StateRun struct {
	Name         string
	Type         string
	MapIteration *int          // set inside a Map state
	Start        time.Duration // offset from the execution's start
	Duration     time.Duration // until exited, or until its last failure if never exited
	Retries      int
	Status       string // Succeeded, Failed, Caught or Running
	Error        string // last error name, if it failed at least once
	Cause        string
}

// StateRuns folds a history into one StateRun per visit of a state, in the
// order the visits started.
func StateRuns(events []HistoryEvent) []StateRun {
	var start time.Time
	var runs []StateRun
	open := map[string]int{} // visit key -> index in runs
	var lastTime time.Time
	key := func(ev HistoryEvent) string {
		if ev.MapIteration != nil {
			return ev.StateName + "#" + strconv.Itoa(*ev.MapIteration)
		}
		return ev.StateName
	}
	for _, ev := range events {
		if start.IsZero() || ev.Type == EventExecutionStarted {
			start = ev.Timestamp
		}
		lastTime = ev.Timestamp
		switch ev.Type {
		case EventStateEntered:
			runs = append(runs, StateRun{
				Name: ev.StateName, Type: ev.StateType, MapIteration: ev.MapIteration,
				Start: ev.Timestamp.Sub(start), Status: "Running",
			})
			open[key(ev)] = len(runs) - 1
		case EventStateRetried, EventStateFailed, EventStateCaught, EventStateExited:
			i, ok := open[key(ev)]
			if !ok {
				continue
			}
			r := &runs[i]
			r.Duration = ev.Timestamp.Sub(start) - r.Start
			switch ev.Type {
			case EventStateRetried:
				r.Retries++
				r.Status = "Running"
			case EventStateFailed:
				r.Status, r.Error, r.Cause = "Failed", ev.Error, ev.Cause
			case EventStateCaught:
				r.Status = "Caught"
			case EventStateExited:
				if r.Status != "Caught" {
					r.Status = "Succeeded"
				}
				delete(open, key(ev))
			}
		}
	}
	// A visit still open when the history ends has lasted until now (its last event).
	for _, i := range open {
		if runs[i].Status == "Running" {
			runs[i].Duration = lastTime.Sub(start) - runs[i].Start
		}
	}
	return runs
}

// maxCause keeps table rows on one line.
const maxCause = 60

// RenderHistory renders a history as a text table, one row per state visit
// like the Step Functions console: name, type, start offset, duration,
// retries, status and error.
func RenderHistory(events []HistoryEvent) string {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tTYPE\tSTART\tDURATION\tRETRIES\tSTATUS\tERROR")
	for _, r := range StateRuns(events) {
		name := r.Name
		if r.MapIteration != nil {
			name = fmt.Sprintf("%s[%d]", name, *r.MapIteration)
		}
		errText := r.Error
		if r.Cause != "" {
			cause := strings.Join(strings.Fields(ReadableCause(r.Cause)), " ")
			if len(cause) > maxCause {
				cause = cause[:maxCause-3] + "..."
			}
			errText += ": " + cause
		}
		fmt.Fprintf(tw, "%s\t%s\t+%s\t%s\t%d\t%s\t%s\n", name, r.Type,
			r.Start.Round(time.Millisecond), r.Duration.Round(time.Millisecond), r.Retries, r.Status, errText)
	}
	_ = tw.Flush()
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// ReadableCause is the part of a cause people read: a Go Lambda's error arrives as aws-lambda-go's JSON
// ({"errorMessage": ..., "errorType": ...}), whose message this returns; any other cause is returned as it is.
func ReadableCause(cause string) string {
	var lambdaErr struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal([]byte(cause), &lambdaErr) == nil && lambdaErr.ErrorMessage != "" {
		return lambdaErr.ErrorMessage
	}
	return cause
}

// HistoryEvent is one entry of an execution's history, as the local engine logs it
// and as the CLI converts Step Functions' history into it. Types: ExecutionStarted, ExecutionSucceeded, ExecutionFailed,
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
