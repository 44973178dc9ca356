package steps

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	ev "github.com/ollama-ecs/ollama-ecs/events"
)

// Waker is the load balancer's Lambda target for sleeping deployments: a request to one starts it again through
// the state machine, under the same deployment id, and is answered 503 with Retry-After and a JSON body in the
// error shape of the API called (OpenAI's under /v1, Ollama's elsewhere) saying when it should serve.
//
// Many requests at once start one execution: the wake's execution name is <id>-w<n> (n the wake's number) and its
// input is the same for all of them, so Step Functions starts it once; a request that finds the wake's execution
// still running starts nothing. A deployment whose last MaxWakeFailures wakes failed stops waking (callers get its
// error), and at most WakesPerDay wakes start per UTC day.
type Waker struct {
	Router          *Router
	Executions      deployment.Executions
	StateMachineArn string
	WakesPerDay     int
	// DefaultStart is the Retry-After of a deployment never woken before (its first start is not measured).
	DefaultStart time.Duration
	Now          func() time.Time
	Log          *slog.Logger
}

func (w *Waker) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// Handle answers one request the load balancer forwarded.
func (w *Waker) Handle(ctx context.Context, req events.ALBTargetGroupRequest) (events.ALBTargetGroupResponse, error) {
	id, rest := deploymentOfPath(req.Path)
	openAI := strings.HasPrefix(rest, "/v1/")
	if !ev.ValidDeploymentID(id) {
		return errorResponse(http.StatusNotFound, 0, openAI, "no deployment at this path"), nil
	}
	res, err := w.Wake(ctx, id)
	if err != nil {
		// An AWS error: the caller may retry; the function's log has the cause.
		deployment.Logger(w.Log, id).Error("wake failed", "error", err)
		return errorResponse(http.StatusServiceUnavailable, 30, openAI, "the deployment could not be woken: "+err.Error()), nil
	}
	return errorResponse(res.Status, res.RetryAfter, openAI, res.Message), nil
}

// deploymentOfPath splits /d/<id>/<rest> (a key segment, /k/<key>, is dropped).
func deploymentOfPath(p string) (id, rest string) {
	tail, ok := strings.CutPrefix(p, deployment.RoutePrefix)
	if !ok {
		return "", p
	}
	id, rest, _ = strings.Cut(tail, "/")
	rest = "/" + rest
	if k, ok := strings.CutPrefix(rest, deployment.KeySegment); ok {
		_, after, _ := strings.Cut(k, "/")
		rest = "/" + after
	}
	return id, rest
}

// errorResponse is a 503 (or other) in Ollama's error shape, or OpenAI's for the compatible API.
func errorResponse(status, retryAfter int, openAI bool, message string) events.ALBTargetGroupResponse {
	var body []byte
	if openAI {
		body, _ = json.Marshal(map[string]any{"error": map[string]any{"message": message, "type": "model_starting",
			"code": "model_starting", "param": nil}})
	} else {
		body, _ = json.Marshal(map[string]any{"error": message, "retry_after_seconds": retryAfter})
	}
	headers := map[string]string{"Content-Type": "application/json"}
	if retryAfter > 0 {
		headers["Retry-After"] = strconv.Itoa(retryAfter)
	}
	return events.ALBTargetGroupResponse{StatusCode: status, StatusDescription: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Headers: headers, Body: string(body)}
}

// Wake starts a sleeping deployment again (the CLI's `wake` calls it too).
func (w *Waker) Wake(ctx context.Context, id string) (deployment.WakeResult, error) {
	res := deployment.WakeResult{DeploymentID: id}
	rec, found, err := w.Router.SleepRecord(ctx, id)
	if err != nil {
		return res, err
	}
	if !found {
		res.Status, res.Message = http.StatusNotFound, "no deployment "+id+" is asleep here"
		return res, nil
	}
	now := w.now().UTC()
	// The last wake's execution: still starting, or failed (counted once).
	if rec.Execution != "" {
		x, err := w.Executions.DescribeExecution(ctx, &sfn.DescribeExecutionInput{ExecutionArn: aws.String(executionArn(w.StateMachineArn, rec.Execution))})
		switch {
		case err != nil && !deployment.IsCode(err, "ExecutionDoesNotExist"):
			return res, deployment.AWSError("states:DescribeExecution", err)
		case err == nil && x.Status == sfntypes.ExecutionStatusRunning:
			res.Execution, res.RetryAfter = aws.ToString(x.ExecutionArn), w.retryAfter(rec, aws.ToTime(x.StartDate), now)
			res.Status, res.Message = http.StatusServiceUnavailable, w.starting(id, res.RetryAfter)
			return res, nil
		case err == nil && x.Status != sfntypes.ExecutionStatusSucceeded && rec.Counted != rec.Execution:
			rec.Failures++
			rec.Counted, rec.LastError = rec.Execution, strings.TrimSpace(aws.ToString(x.Error)+": "+aws.ToString(x.Cause))
			deployment.Logger(w.Log, id).Warn("wake failed", "execution", rec.Execution, "status", x.Status, "failures", rec.Failures)
			if err := w.Router.PutSleepRecord(ctx, rec); err != nil {
				return res, err
			}
		}
	}
	if !rec.Asleep {
		// Served again meanwhile (the rules point at it): the caller should simply retry.
		res.Status, res.RetryAfter, res.Message = http.StatusServiceUnavailable, 1, "deployment "+id+" is serving again: retry"
		return res, nil
	}
	if rec.Failures >= deployment.MaxWakeFailures {
		res.Refused = fmt.Sprintf("its last %d starts failed (%s); it no longer wakes on request: deploy it again", rec.Failures, rec.LastError)
		res.Status, res.Message = http.StatusServiceUnavailable, "deployment "+id+" "+res.Refused
		return res, nil
	}
	day := now.Format("2006-01-02")
	if rec.Day != day {
		rec.Day, rec.WakesToday = day, 0
	}
	perDay := w.WakesPerDay
	if perDay <= 0 {
		perDay = deployment.DefaultWakesPerDay
	}
	if rec.WakesToday >= perDay {
		midnight := now.Truncate(24 * time.Hour).Add(24 * time.Hour)
		res.Refused = fmt.Sprintf("woken %d times today, the most a day allows", rec.WakesToday)
		res.Status, res.RetryAfter = http.StatusTooManyRequests, int(math.Ceil(midnight.Sub(now).Seconds()))
		res.Message = "deployment " + id + " was " + res.Refused + "; it wakes again after midnight UTC"
		return res, nil
	}
	// The same name and the same input from every concurrent request: Step Functions starts one execution.
	n := rec.Wakes + 1
	name := fmt.Sprintf("%s-w%d", id, n)
	input := rec.Request
	input.DeploymentID, input.Wake, input.Restart, input.Avoid = id, n, 0, nil
	raw, _ := json.Marshal(input)
	started, err := w.Executions.StartExecution(ctx, &sfn.StartExecutionInput{StateMachineArn: aws.String(w.StateMachineArn),
		Name: aws.String(name), Input: aws.String(string(raw))})
	switch {
	case err == nil:
		res.Started, res.Execution = true, aws.ToString(started.ExecutionArn)
	case deployment.IsCode(err, "ExecutionAlreadyExists"):
		res.Execution = executionArn(w.StateMachineArn, name)
	default:
		return res, deployment.AWSError("states:StartExecution", err)
	}
	if rec.Execution != name {
		rec.Wakes, rec.WakesToday, rec.LastWake, rec.Execution = n, rec.WakesToday+1, now.Format(time.RFC3339Nano), name
		if err := w.Router.PutSleepRecord(ctx, rec); err != nil {
			return res, err
		}
	}
	res.RetryAfter = w.retryAfter(rec, now, now)
	res.Status, res.Message = http.StatusServiceUnavailable, w.starting(id, res.RetryAfter)
	deployment.Logger(w.Log, id).Info("deployment woken", "execution", res.Execution, "started", res.Started, "wake", n)
	return res, nil
}

// retryAfter is the seconds left until the deployment should serve: its last measured start (else the default)
// from when this wake began, at least 1.
func (w *Waker) retryAfter(rec deployment.SleepRecord, began, now time.Time) int {
	expected := w.DefaultStart
	if expected <= 0 {
		expected = time.Minute
	}
	if rec.LastStartSeconds > 0 {
		expected = time.Duration(rec.LastStartSeconds * float64(time.Second))
	}
	left := began.Add(expected).Sub(now)
	return max(1, int(math.Ceil(left.Seconds())))
}

func (w *Waker) starting(id string, retryAfter int) string {
	return fmt.Sprintf("deployment %s is starting after sleeping; it should serve in about %d s: retry then", id, retryAfter)
}
