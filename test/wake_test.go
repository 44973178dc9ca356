package test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/cloud"
)

// get answers a GET with its status, Retry-After and body.
func get(t *testing.T, url string) (int, string, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Retry-After"), string(body)
}

// sleepRecord reads a deployment's sleep record from the local parameter store.
func sleepRecord(t *testing.T, s *local.Stack, id string) (deployment.SleepRecord, bool) {
	t.Helper()
	out, err := s.Parameters.GetParameter(context.Background(), &ssm.GetParameterInput{
		Name: aws.String(deployment.SleepParameterName(deployment.DefaultConfig().SleepPrefix, id))})
	if err != nil {
		return deployment.SleepRecord{}, false
	}
	var rec deployment.SleepRecord
	if err := json.Unmarshal([]byte(aws.ToString(out.Parameter.Value)), &rec); err != nil {
		t.Fatal(err)
	}
	return rec, true
}

// waitFor polls until ok or the deadline.
func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}

		time.Sleep(50 * time.Millisecond)
	}
}

// wakeExecutions counts the executions started to wake a deployment.
// (The stack lists every start it was asked for; a start of a name already running is the same execution.)
func wakeExecutions(s *local.Stack, id string) int {
	seen := map[string]bool{}
	for _, ex := range s.Executions() {
		if strings.HasPrefix(ex.ExecutionArn[strings.LastIndex(ex.ExecutionArn, ":")+1:], id+"-w") {
			seen[ex.ExecutionArn] = true
		}
	}
	return len(seen)
}

// TestWakeOnRequest: a dev deployment that auto-stops keeps its endpoint; a request wakes it (503 with Retry-After
// in Ollama's and OpenAI's shapes), and once healthy the endpoint serves again. 50 requests at once start one
// execution; a deployment whose wakes keep failing stops waking and says why; a forgotten one is gone.
func TestWakeOnRequest(t *testing.T) {
	s := stackWithTiny(t, local.Options{TimeScale: 60, IdleWindow: 2 * time.Minute})
	rec := succeeded(t, deploy(t, s, events.DeployRequest{Model: "tiny", TTL: "1m", DeploymentID: "sleepy", Requester: "test"}))

	// Idle: the auto-stop stops the task and the deployment sleeps with its route.
	waitFor(t, 30*time.Second, "the auto-stop", func() bool { return len(tasksOf(t, s, "sleepy")) == 0 })
	waitFor(t, 10*time.Second, "the sleep record", func() bool { r, ok := sleepRecord(t, s, "sleepy"); return ok && r.Asleep })

	code, retry, body := get(t, rec.Endpoint+"/api/tags")
	if code != http.StatusServiceUnavailable || retry == "" || !strings.Contains(body, `"error":"deployment sleepy is starting`) {
		t.Fatalf("first request: %d Retry-After %q %s", code, retry, body)
	}
	code, _, body = get(t, rec.Endpoint+"/v1/models")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"type":"model_starting"`) {
		t.Errorf("OpenAI-shaped request: %d %s", code, body)
	}
	wake1 := executionNamed(t, s, "sleepy-w1")
	waitFor(t, time.Minute, "the wake's execution", func() bool {
		x, err := s.Engine.Describe(context.Background(), wake1)
		return err == nil && x.Status != "RUNNING"
	})
	if x := waitDone(t, s, wake1); x.Status != "SUCCEEDED" {
		t.Fatalf("wake: %s %s %s\n%s", x.Status, x.Error, x.Cause, deployment.RenderHistory(x.Events))
	}
	waitFor(t, 30*time.Second, "the woken deployment to serve", func() bool { c, _, _ := get(t, rec.Endpoint+"/api/tags"); return c == http.StatusOK })
	if n := wakeExecutions(s, "sleepy"); n != 1 {
		t.Errorf("%d wake executions, want 1", n)
	}
	r, _ := sleepRecord(t, s, "sleepy")
	if r.Asleep || r.Wakes != 1 || r.LastStartSeconds <= 0 {
		t.Errorf("record after the wake %+v", r)
	}

	// A stop (not forgotten) puts it to sleep again; 50 requests at once start exactly one execution.
	stopDeployment(t, s, "sleepy")
	waitFor(t, 10*time.Second, "sleep again", func() bool { r, ok := sleepRecord(t, s, "sleepy"); return ok && r.Asleep })
	var wg sync.WaitGroup
	codes := make([]int, 50)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(rec.Endpoint + "/api/tags")
			if err == nil {
				codes[i] = resp.StatusCode
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusServiceUnavailable && c != http.StatusOK {
			t.Errorf("request %d: %d", i, c)
		}
	}
	waitFor(t, time.Minute, "the second wake to serve", func() bool { c, _, _ := get(t, rec.Endpoint+"/api/tags"); return c == http.StatusOK })
	if x := waitDone(t, s, executionNamed(t, s, "sleepy-w2")); x.Status != "SUCCEEDED" {
		t.Errorf("the wake of 50 requests: %s %s %s\n%s", x.Status, x.Error, x.Cause, deployment.RenderHistory(x.Events))
	}
	if n := wakeExecutions(s, "sleepy"); n != 2 {
		t.Errorf("%d wake executions after 50 concurrent requests, want 2 in all", n)
	}

	// Wakes that fail: after MaxWakeFailures in a row, no more starts; the error is shown; nothing is left running.
	stopDeployment(t, s, "sleepy")
	waitFor(t, 10*time.Second, "sleep a third time", func() bool { r, ok := sleepRecord(t, s, "sleepy"); return ok && r.Asleep })
	for i := range deployment.MaxWakeFailures {
		s.ECS.Faults().CrashNextTask(cloud.StagePending)
		before := wakeExecutions(s, "sleepy")
		if code, _, body := get(t, rec.Endpoint+"/api/tags"); code != http.StatusServiceUnavailable || !strings.Contains(body, "is starting") {
			r, _ := sleepRecord(t, s, "sleepy")
			t.Fatalf("failing wake %d: %d %s; record %+v", i, code, body, r)
		}
		arn := executionNamed(t, s, "sleepy-w"+itoa(3+i))
		waitFor(t, time.Minute, "the failing wake to end", func() bool {
			x, err := s.Engine.Describe(context.Background(), arn)
			return err == nil && x.Status != "RUNNING"
		})
		if wakeExecutions(s, "sleepy") != before+1 {
			t.Fatalf("failing wake %d started %d executions", i, wakeExecutions(s, "sleepy")-before)
		}
	}
	code, _, body = get(t, rec.Endpoint+"/api/tags")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "no longer wakes on request") || !strings.Contains(body, "TaskStoppedError") {
		t.Errorf("after %d failed wakes: %d %s", deployment.MaxWakeFailures, code, body)
	}
	if n := wakeExecutions(s, "sleepy"); n != 2+deployment.MaxWakeFailures {
		t.Errorf("%d wake executions, want %d: the refused request must start none", n, 2+deployment.MaxWakeFailures)
	}
	if live := tasksOf(t, s, "sleepy"); len(live) != 0 || len(scheduleNames(t, s)) != 0 {
		t.Errorf("left running after failed wakes: %d tasks, schedules %v", len(live), scheduleNames(t, s))
	}

	// Forgotten: the endpoint goes.
	routed, err := s.PutEvent(ctxFor(t, 10*time.Second), forgetEvent("sleepy"))
	if err != nil || routed.Stopped == nil || routed.Stopped.Sleeping {
		t.Fatalf("forget: %v %+v", err, routed.Stopped)
	}
	if code, _, _ := get(t, rec.Endpoint+"/api/tags"); code != http.StatusNotFound {
		t.Errorf("a forgotten deployment answers %d, want 404", code)
	}
	if _, ok := sleepRecord(t, s, "sleepy"); ok {
		t.Errorf("the sleep record is left after forget")
	}
	assertNothingLeft(t, s, "sleepy")
}

// executionNamed is the ARN of the execution of that name the stack started.
func executionNamed(t *testing.T, s *local.Stack, name string) string {
	t.Helper()
	for _, ex := range s.Executions() {
		if strings.HasSuffix(ex.ExecutionArn, ":"+name) {
			return ex.ExecutionArn
		}
	}
	t.Fatalf("no execution %s among %+v", name, s.Executions())
	return ""
}

func forgetEvent(id string) []byte {
	raw, _ := json.Marshal(map[string]any{"version": "0", "id": "forget-" + id, "source": events.SourceOllamaECS,
		"detail-type": events.DetailTypeStop, "account": "111122223333", "region": "us-east-1", "time": time.Now().UTC(),
		"detail": events.StopRequest{DeploymentID: id, Requester: "test", Forget: true}})
	return raw
}
