package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

// pollInterval is how often --follow asks Step Functions for news.
var pollInterval = time.Second

// deploymentFailedError is an execution that ended without a deployment: the error name and cause are the state
// machine's (workflow/deploy.asl.json's Fail states pass them through).
type deploymentFailedError struct {
	Name, Status, ErrorName, Cause string
}

func (e *deploymentFailedError) Error() string {
	msg := fmt.Sprintf("deployment %s %s", e.Name, strings.ToLower(strings.ReplaceAll(e.Status, "_", " ")))
	if e.ErrorName != "" {
		msg += ": " + e.ErrorName
	}
	if e.Cause != "" {
		msg += ": " + oneLine(deployment.ReadableCause(e.Cause))
	}
	return msg
}

// executionSource reads an execution and its history: Step Functions on AWS, the local engine in local mode.
type executionSource interface {
	read(ctx context.Context, arn string) (execution, []deployment.HistoryEvent, error)
}

// stepFunctions reads executions from Step Functions.
type stepFunctions struct{ SFN Executions }

func (s stepFunctions) read(ctx context.Context, arn string) (execution, []deployment.HistoryEvent, error) {
	x, err := describeExecution(ctx, s.SFN, arn)
	if err != nil {
		return x, nil, err
	}
	raw, err := fetchHistory(ctx, s.SFN, arn)
	if err != nil {
		return x, nil, err
	}
	return x, convertHistory(raw), nil
}

// follower shows an execution live: each state as it is entered and left, retries and failures, with the time
// since the execution started and, on a terminal, a spinner while nothing happens. The AWS and the local
// commands follow through it alike.
type follower struct {
	Source   executionSource
	Out      io.Writer
	Spinner  bool
	Interval time.Duration
	Now      func() time.Time
	// Quiet prints nothing (JSON output waits for the end).
	Quiet bool

	printed int
	frame   int
	spun    bool
}

// follow polls until the execution ends and returns its final description.
func (f *follower) follow(ctx context.Context, arn string) (execution, error) {
	now := f.Now
	if now == nil {
		now = time.Now
	}
	for {
		x, hist, err := f.Source.read(ctx, arn)
		if err != nil {
			return x, err
		}
		if !f.Quiet {
			f.show(x, hist)
		}
		if x.done() {
			f.clearSpinner()
			return x, nil
		}
		if !f.Quiet && f.Spinner {
			f.spin(x, hist, now())
		}
		select {
		case <-ctx.Done():
			f.clearSpinner()
			return x, ctx.Err()
		case <-time.After(f.Interval):
		}
	}
}

// show prints the history events not printed yet.
func (f *follower) show(x execution, hist []deployment.HistoryEvent) {
	for _, ev := range hist[min(f.printed, len(hist)):] {
		if line := followLine(x.StartDate, ev, hist); line != "" {
			f.clearSpinner()
			fmt.Fprintln(f.Out, line)
		}
	}
	f.printed = max(f.printed, len(hist))
}

// followLine is one live line for a history event, or "" for events people need not see.
func followLine(start time.Time, ev deployment.HistoryEvent, hist []deployment.HistoryEvent) string {
	at := "+" + elapsed(ev.Timestamp.Sub(start))
	var what string
	switch ev.Type {
	case deployment.EventExecutionStarted:
		return fmt.Sprintf("%8s  execution started", at)
	case deployment.EventStateEntered:
		what = "entered"
	case deployment.EventStateExited:
		what = "done"
		for i := ev.Index - 2; i >= 0; i-- {
			if hist[i].Type == deployment.EventStateEntered && hist[i].StateName == ev.StateName {
				what = "done in " + elapsed(ev.Timestamp.Sub(hist[i].Timestamp))
				break
			}
		}
	case deployment.EventStateFailed:
		what = "failed: " + ev.Error
		if ev.Cause != "" {
			what += ": " + shorten(oneLine(deployment.ReadableCause(ev.Cause)), 100)
		}
	case deployment.EventStateRetried:
		what = fmt.Sprintf("retry %d after %s", ev.RetryAttempt, ev.Error)
	case deployment.EventStateCaught:
		what = "caught " + ev.Error
	case "ExecutionSucceeded":
		return fmt.Sprintf("%8s  execution succeeded", at)
	case "ExecutionFailed":
		return fmt.Sprintf("%8s  execution failed", at)
	case "ExecutionAborted":
		return fmt.Sprintf("%8s  execution aborted", at)
	case "ExecutionTimeout":
		return fmt.Sprintf("%8s  execution timed out", at)
	default:
		return ""
	}
	return fmt.Sprintf("%8s  %-24s %s", at, ev.StateName, what)
}

var spinnerFrames = []string{"|", "/", "-", "\\"}

func (f *follower) spin(x execution, hist []deployment.HistoryEvent, now time.Time) {
	state := "starting"
	for i := len(hist) - 1; i >= 0; i-- {
		if hist[i].Type == deployment.EventStateEntered {
			state = hist[i].StateName
			break
		}
	}
	fmt.Fprintf(f.Out, "\r\033[K%s %s  %s", spinnerFrames[f.frame%len(spinnerFrames)], state, elapsed(now.Sub(x.StartDate)))
	f.frame++
	f.spun = true
}

func (f *follower) clearSpinner() {
	if f.spun {
		fmt.Fprint(f.Out, "\r\033[K")
		f.spun = false
	}
}

// finish turns a finished execution into the deployment record, or the error that ended it.
func finish(x execution) (deployment.Record, error) {
	if x.Status != "SUCCEEDED" {
		return deployment.Record{}, &deploymentFailedError{Name: x.Name, Status: x.Status, ErrorName: x.Error, Cause: x.Cause}
	}
	var rec deployment.Record
	if err := json.Unmarshal(x.Output, &rec); err != nil {
		return rec, fmt.Errorf("execution %s succeeded but its output is not a deployment record: %v", x.Name, err)
	}
	if rec.Fallbacks == nil {
		rec.Fallbacks = []deployment.Attempt{}
	}
	return rec, nil
}

// writeRecord prints a ready deployment for people.
func writeRecord(w io.Writer, x execution, rec deployment.Record, now time.Time) {
	fmt.Fprintf(w, "\nready: %s (%s, %s) after %s\n", rec.DeploymentID, rec.Model, rec.Env, elapsed(x.StopDate.Sub(x.StartDate)))
	fmt.Fprintf(w, "  endpoint   %s\n", rec.Endpoint)
	fmt.Fprintf(w, "  placement  %s\n", placementText(rec.Placement, rec.InstanceType))
	fmt.Fprintf(w, "  cost       $%.4f/hour\n", rec.HourlyCostUSD)
	if im := rec.ImageText(); im != "" {
		fmt.Fprintf(w, "  image      %s\n", im)
	}
	fmt.Fprintf(w, "  auto-stop  %s\n", autoStopText(rec.AutoStopAt, now))
	if rec.ServiceArn != "" {
		fmt.Fprintf(w, "  service    %s (scales with load: ollama-ecs scale %s --min N --max M)\n", rec.ServiceArn, rec.DeploymentID)
	} else {
		fmt.Fprintf(w, "  task       %s\n", rec.TaskArn)
	}
	for _, a := range rec.Fallbacks {
		fmt.Fprintf(w, "  fell back  from %s: %s\n", a.Placement, a.Reason)
	}
	fmt.Fprintf(w, "\n%s\n", runLine(rec))
}

// runLine is the command that talks to a ready deployment with the unchanged ollama CLI.
func runLine(rec deployment.Record) string {
	if rec.KeyParameter != "" {
		// The key goes in the path: the ollama CLI sends no Authorization header of its own.
		return fmt.Sprintf("OLLAMA_HOST=$(ollama-ecs endpoint %s --with-key) ollama run %s", rec.DeploymentID, rec.Model)
	}
	return fmt.Sprintf("OLLAMA_HOST=%s ollama run %s", rec.Endpoint, rec.Model)
}

// autoStopText is a stop time with how far away it is, or "none".
func autoStopText(at string, now time.Time) string {
	if at == "" {
		return "none (runs until stopped)"
	}
	t, err := time.Parse(time.RFC3339, at)
	if err != nil {
		return at
	}
	d := t.Sub(now)
	if d < 0 {
		return fmt.Sprintf("%s (due)", t.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("%s (in %s)", t.UTC().Format(time.RFC3339), shortDuration(d))
}

// placementText is the placement with the instance type when the label does not already name it.
func placementText(placement, instanceType string) string {
	if instanceType == "" || strings.Contains(placement, instanceType) {
		return placement
	}
	return placement + " (" + instanceType + ")"
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-3] + "..."
}

// isTerminal reports whether w is a terminal, for the spinner and the progress bar.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
