package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

func defineHistory(fs *pflag.FlagSet) runner {
	af := addAWSFlags(fs)
	return func(ctx context.Context, pos []string, stdout, stderr io.Writer) error {
		arn := pos[0]
		need := []string{}
		id := ""
		if !strings.HasPrefix(arn, "arn:") {
			if !events.ValidDeploymentID(arn) {
				return usageError{fmt.Sprintf("%q is neither a deployment id (3-36 of a-z, 0-9, -) nor an execution ARN", arn)}
			}
			id = arn
			need = append(need, outStateMachine, outCluster, outScheduleGroup)
		}
		c, err := connect(ctx, af, need...)
		if err != nil {
			return err
		}
		if !strings.HasPrefix(arn, "arn:") {
			arn = executionARN(c.Outputs[outStateMachine], arn)
		}
		x, err := describeExecution(ctx, c.SFN, arn)
		if err != nil {
			return err
		}
		raw, err := fetchHistory(ctx, c.SFN, arn)
		if err != nil {
			return err
		}
		hist := convertHistory(raw)
		if af.json() {
			return writeJSON(stdout, historyJSON(x, hist))
		}
		writeExecutionHeader(stdout, x)
		if id != "" {
			// What became of the deployment since: an interruption (or a restart) is not in this execution's history.
			ds, err := listDeployments(ctx, c.ECS, c.Scheduler, c.Outputs[outCluster], c.Outputs[outScheduleGroup], id, time.Now(), true, nil)
			if err != nil {
				return err
			}
			for _, d := range ds {
				line := fmt.Sprintf("deployment now: %s on %s", d.Status, placementText(d.Placement, d.InstanceType))
				if d.StoppedReason != "" {
					line += ": " + d.StoppedReason
				}
				fmt.Fprintln(stdout, line)
			}
		}
		fmt.Fprintln(stdout)
		_, err = io.WriteString(stdout, deployment.RenderHistory(hist))
		return err
	}
}

// execution is what the commands keep of DescribeExecution.
type execution struct {
	ARN       string          `json:"executionArn"`
	Name      string          `json:"name"`
	Status    string          `json:"status"`
	StartDate time.Time       `json:"startDate"`
	StopDate  time.Time       `json:"stopDate,omitzero"`
	Output    json.RawMessage `json:"output,omitempty"`
	Error     string          `json:"error,omitempty"`
	Cause     string          `json:"cause,omitempty"`
}

func (x execution) done() bool {
	return x.Status != "" && x.Status != string(sfntypes.ExecutionStatusRunning)
}

// errUnknownExecution is a deployment id or ARN with no execution behind it.
type errUnknownExecution struct{ arn string }

func (e errUnknownExecution) Error() string {
	name := e.arn[strings.LastIndex(e.arn, ":")+1:]
	return fmt.Sprintf("unknown deployment %q: no execution %s", name, e.arn)
}

func describeExecution(ctx context.Context, api Executions, arn string) (execution, error) {
	out, err := api.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(arn)})
	if err != nil {
		if isCode(err, "ExecutionDoesNotExist") {
			return execution{}, errUnknownExecution{arn}
		}
		if isCode(err, "InvalidArn") {
			return execution{}, usageError{fmt.Sprintf("%q is not an execution ARN", arn)}
		}
		return execution{}, awsErr("states:DescribeExecution", err)
	}
	x := execution{
		ARN: aws.ToString(out.ExecutionArn), Name: aws.ToString(out.Name), Status: string(out.Status),
		StartDate: aws.ToTime(out.StartDate), StopDate: aws.ToTime(out.StopDate),
		Error: aws.ToString(out.Error), Cause: aws.ToString(out.Cause),
	}
	if o := aws.ToString(out.Output); o != "" && json.Valid([]byte(o)) {
		x.Output = json.RawMessage(o)
	}
	return x, nil
}

// fetchHistory reads an execution's whole history, page by page.
func fetchHistory(ctx context.Context, api Executions, arn string) ([]sfntypes.HistoryEvent, error) {
	in := &sfn.GetExecutionHistoryInput{ExecutionArn: aws.String(arn), MaxResults: 1000}
	var all []sfntypes.HistoryEvent
	for {
		out, err := api.GetExecutionHistory(ctx, in)
		if err != nil {
			if isCode(err, "ExecutionDoesNotExist") {
				return nil, errUnknownExecution{arn}
			}
			return nil, awsErr("states:GetExecutionHistory", err)
		}
		all = append(all, out.Events...)
		if out.NextToken == nil {
			return all, nil
		}
		in.NextToken = out.NextToken
	}
}

// executionARN is the ARN of the execution a deployment id names: the CLI starts executions with the deployment
// id as their name.
func executionARN(stateMachineARN, name string) string {
	return strings.Replace(stateMachineARN, ":stateMachine:", ":execution:", 1) + ":" + name
}

// convertHistory turns a Step Functions history into the engine's events, so one renderer serves local runs and
// AWS. Step Functions has no retry or catch events: a task that fails and is scheduled again within the same
// state visit was retried; a state that exits after a failure caught it; a Fail state ends in the execution's
// failure.
func convertHistory(in []sfntypes.HistoryEvent) []deployment.HistoryEvent {
	var out []deployment.HistoryEvent
	var cur struct {
		name, typ string
		open      bool
		failed    bool
		lastError string
		retries   int
	}
	add := func(ev sfntypes.HistoryEvent, typ string, f func(*deployment.HistoryEvent)) {
		h := deployment.HistoryEvent{Index: len(out) + 1, Type: typ, Timestamp: aws.ToTime(ev.Timestamp)}
		if f != nil {
			f(&h)
		}
		out = append(out, h)
	}
	inState := func(h *deployment.HistoryEvent) { h.StateName, h.StateType = cur.name, cur.typ }
	fail := func(ev sfntypes.HistoryEvent, errName, cause *string) {
		if !cur.open {
			return
		}
		// A Go Lambda's cause is aws-lambda-go's JSON error; its message is what people read.
		cause = aws.String(deployment.ReadableCause(aws.ToString(cause)))
		cur.failed, cur.lastError = true, aws.ToString(errName)
		add(ev, deployment.EventStateFailed, func(h *deployment.HistoryEvent) {
			inState(h)
			h.Error, h.Cause = aws.ToString(errName), aws.ToString(cause)
		})
	}
	for _, ev := range in {
		t := string(ev.Type)
		switch {
		case ev.Type == sfntypes.HistoryEventTypeExecutionStarted:
			add(ev, deployment.EventExecutionStarted, func(h *deployment.HistoryEvent) {
				if d := ev.ExecutionStartedEventDetails; d != nil && json.Valid([]byte(aws.ToString(d.Input))) {
					h.Input = json.RawMessage(aws.ToString(d.Input))
				}
			})
		case strings.HasSuffix(t, "StateEntered") && ev.StateEnteredEventDetails != nil:
			cur.name, cur.typ = aws.ToString(ev.StateEnteredEventDetails.Name), strings.TrimSuffix(t, "StateEntered")
			cur.open, cur.failed, cur.lastError, cur.retries = true, false, "", 0
			add(ev, deployment.EventStateEntered, inState)
		case strings.HasSuffix(t, "StateExited") && ev.StateExitedEventDetails != nil:
			if cur.failed {
				add(ev, deployment.EventStateCaught, func(h *deployment.HistoryEvent) { inState(h); h.Error = cur.lastError })
			}
			add(ev, deployment.EventStateExited, func(h *deployment.HistoryEvent) {
				h.StateName, h.StateType = aws.ToString(ev.StateExitedEventDetails.Name), strings.TrimSuffix(t, "StateExited")
				if o := aws.ToString(ev.StateExitedEventDetails.Output); json.Valid([]byte(o)) {
					h.Output = json.RawMessage(o)
				}
			})
			cur.open = false
		case ev.Type == sfntypes.HistoryEventTypeLambdaFunctionScheduled, ev.Type == sfntypes.HistoryEventTypeTaskScheduled,
			ev.Type == sfntypes.HistoryEventTypeActivityScheduled:
			if cur.open && cur.failed {
				cur.failed = false
				cur.retries++
				add(ev, deployment.EventStateRetried, func(h *deployment.HistoryEvent) {
					inState(h)
					h.Error, h.RetryAttempt = cur.lastError, cur.retries
				})
			}
		case ev.LambdaFunctionFailedEventDetails != nil:
			fail(ev, ev.LambdaFunctionFailedEventDetails.Error, ev.LambdaFunctionFailedEventDetails.Cause)
		case ev.LambdaFunctionTimedOutEventDetails != nil:
			fail(ev, ev.LambdaFunctionTimedOutEventDetails.Error, ev.LambdaFunctionTimedOutEventDetails.Cause)
		case ev.LambdaFunctionStartFailedEventDetails != nil:
			fail(ev, ev.LambdaFunctionStartFailedEventDetails.Error, ev.LambdaFunctionStartFailedEventDetails.Cause)
		case ev.LambdaFunctionScheduleFailedEventDetails != nil:
			fail(ev, ev.LambdaFunctionScheduleFailedEventDetails.Error, ev.LambdaFunctionScheduleFailedEventDetails.Cause)
		case ev.TaskFailedEventDetails != nil:
			fail(ev, ev.TaskFailedEventDetails.Error, ev.TaskFailedEventDetails.Cause)
		case ev.TaskTimedOutEventDetails != nil:
			fail(ev, ev.TaskTimedOutEventDetails.Error, ev.TaskTimedOutEventDetails.Cause)
		case ev.TaskStartFailedEventDetails != nil:
			fail(ev, ev.TaskStartFailedEventDetails.Error, ev.TaskStartFailedEventDetails.Cause)
		case ev.TaskSubmitFailedEventDetails != nil:
			fail(ev, ev.TaskSubmitFailedEventDetails.Error, ev.TaskSubmitFailedEventDetails.Cause)
		case ev.ActivityFailedEventDetails != nil:
			fail(ev, ev.ActivityFailedEventDetails.Error, ev.ActivityFailedEventDetails.Cause)
		case ev.ActivityTimedOutEventDetails != nil:
			fail(ev, ev.ActivityTimedOutEventDetails.Error, ev.ActivityTimedOutEventDetails.Cause)
		case ev.EvaluationFailedEventDetails != nil:
			fail(ev, ev.EvaluationFailedEventDetails.Error, ev.EvaluationFailedEventDetails.Cause)
		case ev.Type == sfntypes.HistoryEventTypeExecutionFailed:
			d := ev.ExecutionFailedEventDetails
			if d == nil {
				d = &sfntypes.ExecutionFailedEventDetails{}
			}
			// A Fail state (or an uncaught failure already recorded) ends here.
			if cur.open && !cur.failed {
				fail(ev, d.Error, d.Cause)
			}
			add(ev, "ExecutionFailed", func(h *deployment.HistoryEvent) { h.Error, h.Cause = aws.ToString(d.Error), aws.ToString(d.Cause) })
		case ev.Type == sfntypes.HistoryEventTypeExecutionSucceeded:
			add(ev, "ExecutionSucceeded", nil)
		case ev.Type == sfntypes.HistoryEventTypeExecutionAborted:
			add(ev, "ExecutionAborted", nil)
		case ev.Type == sfntypes.HistoryEventTypeExecutionTimedOut:
			add(ev, "ExecutionTimeout", nil)
		}
	}
	return out
}

// writeExecutionHeader is the summary above a history: which execution, its status and how long it ran.
func writeExecutionHeader(w io.Writer, x execution) {
	fmt.Fprintf(w, "%s  %s\n", x.Name, x.Status)
	fmt.Fprintf(w, "execution: %s\n", x.ARN)
	line := "started: " + x.StartDate.UTC().Format(time.RFC3339)
	if !x.StopDate.IsZero() {
		line += fmt.Sprintf("  stopped: %s  (%s)", x.StopDate.UTC().Format(time.RFC3339), elapsed(x.StopDate.Sub(x.StartDate)))
	}
	fmt.Fprintln(w, line)
	if x.Error != "" || x.Cause != "" {
		fmt.Fprintf(w, "error: %s: %s\n", x.Error, oneLine(deployment.ReadableCause(x.Cause)))
	}
}

// stateRunJSON is one row of the history for machines: offsets and durations in milliseconds.
type stateRunJSON struct {
	Name         string `json:"name"`
	Type         string `json:"type"`
	MapIteration *int   `json:"mapIteration,omitempty"`
	StartMs      int64  `json:"startMs"`
	DurationMs   int64  `json:"durationMs"`
	Retries      int    `json:"retries"`
	Status       string `json:"status"`
	Error        string `json:"error,omitempty"`
	Cause        string `json:"cause,omitempty"`
}

func historyJSON(x execution, hist []deployment.HistoryEvent) any {
	runs := []stateRunJSON{}
	for _, r := range deployment.StateRuns(hist) {
		runs = append(runs, stateRunJSON{
			Name: r.Name, Type: r.Type, MapIteration: r.MapIteration, StartMs: r.Start.Milliseconds(),
			DurationMs: r.Duration.Milliseconds(), Retries: r.Retries, Status: r.Status, Error: r.Error, Cause: r.Cause,
		})
	}
	if hist == nil {
		hist = []deployment.HistoryEvent{}
	}
	return struct {
		execution
		States []stateRunJSON            `json:"states"`
		Events []deployment.HistoryEvent `json:"events"`
	}{x, runs, hist}
}

// elapsed prints a duration the way people read one: tenths of a second under a minute, whole seconds above.
func elapsed(d time.Duration) string {
	if d < time.Minute {
		return d.Round(100 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
