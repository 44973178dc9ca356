package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	sfntypes "github.com/aws/aws-sdk-go-v2/service/sfn/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs (go test -update rewrites it)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

var t0 = time.Date(2026, 11, 27, 9, 0, 0, 0, time.UTC)

// sampleHistory is a Step Functions history of a deployment that fell back from a GPU type, retried a throttled
// RunTask and polled health twice.
func sampleHistory() []sfntypes.HistoryEvent {
	var evs []sfntypes.HistoryEvent
	at := func(ms int) *time.Time { ts := t0.Add(time.Duration(ms) * time.Millisecond); return &ts }
	add := func(ms int, typ sfntypes.HistoryEventType, f func(*sfntypes.HistoryEvent)) {
		ev := sfntypes.HistoryEvent{Id: int64(len(evs) + 1), Timestamp: at(ms), Type: typ}
		if f != nil {
			f(&ev)
		}
		evs = append(evs, ev)
	}
	enter := func(ms int, typ sfntypes.HistoryEventType, name string) {
		add(ms, typ, func(e *sfntypes.HistoryEvent) {
			e.StateEnteredEventDetails = &sfntypes.StateEnteredEventDetails{Name: aws.String(name), Input: aws.String("{}")}
		})
	}
	exit := func(ms int, typ sfntypes.HistoryEventType, name string) {
		add(ms, typ, func(e *sfntypes.HistoryEvent) {
			e.StateExitedEventDetails = &sfntypes.StateExitedEventDetails{Name: aws.String(name), Output: aws.String("{}")}
		})
	}
	causes := map[string]string{
		"ThrottlingError":    "ecs:RunTask throttled: Rate exceeded",
		"HealthTimeoutError": "not healthy in time: still pulling (model not present)",
	}
	lambda := func(ms int, failErr string) {
		add(ms, sfntypes.HistoryEventTypeLambdaFunctionScheduled, nil)
		add(ms+10, sfntypes.HistoryEventTypeLambdaFunctionStarted, nil)
		if failErr != "" {
			add(ms+300, sfntypes.HistoryEventTypeLambdaFunctionFailed, func(e *sfntypes.HistoryEvent) {
				e.LambdaFunctionFailedEventDetails = &sfntypes.LambdaFunctionFailedEventDetails{
					Error: aws.String(failErr), Cause: aws.String(`{"errorMessage": "` + causes[failErr] + `", "errorType": "` + failErr + `"}`),
				}
			})
			return
		}
		add(ms+300, sfntypes.HistoryEventTypeLambdaFunctionSucceeded, nil)
	}
	add(0, sfntypes.HistoryEventTypeExecutionStarted, func(e *sfntypes.HistoryEvent) {
		e.ExecutionStartedEventDetails = &sfntypes.ExecutionStartedEventDetails{Input: aws.String(`{"model":"mistral:7b"}`)}
	})
	enter(20, sfntypes.HistoryEventTypeTaskStateEntered, "Validate request")
	lambda(30, "")
	exit(400, sfntypes.HistoryEventTypeTaskStateExited, "Validate request")
	enter(410, sfntypes.HistoryEventTypeTaskStateEntered, "Choose configuration")
	lambda(420, "")
	exit(800, sfntypes.HistoryEventTypeTaskStateExited, "Choose configuration")
	enter(810, sfntypes.HistoryEventTypeTaskStateEntered, "Check EC2 capacity")
	lambda(820, "")
	exit(1200, sfntypes.HistoryEventTypeTaskStateExited, "Check EC2 capacity")
	enter(1210, sfntypes.HistoryEventTypeChoiceStateEntered, "Capacity available?")
	exit(1215, sfntypes.HistoryEventTypeChoiceStateExited, "Capacity available?")
	enter(1220, sfntypes.HistoryEventTypeTaskStateEntered, "Run ECS task")
	lambda(1230, "ThrottlingError")
	lambda(2600, "")
	exit(3000, sfntypes.HistoryEventTypeTaskStateExited, "Run ECS task")
	enter(3010, sfntypes.HistoryEventTypeTaskStateEntered, "Poll health")
	lambda(3020, "")
	exit(3400, sfntypes.HistoryEventTypeTaskStateExited, "Poll health")
	enter(3410, sfntypes.HistoryEventTypeChoiceStateEntered, "Healthy?")
	exit(3415, sfntypes.HistoryEventTypeChoiceStateExited, "Healthy?")
	enter(3420, sfntypes.HistoryEventTypeWaitStateEntered, "Wait for health")
	exit(18420, sfntypes.HistoryEventTypeWaitStateExited, "Wait for health")
	enter(18430, sfntypes.HistoryEventTypeTaskStateEntered, "Poll health")
	lambda(18440, "HealthTimeoutError")
	exit(18800, sfntypes.HistoryEventTypeTaskStateExited, "Poll health")
	enter(18810, sfntypes.HistoryEventTypeTaskStateEntered, "Clean up")
	lambda(18820, "")
	exit(19200, sfntypes.HistoryEventTypeTaskStateExited, "Clean up")
	enter(19210, sfntypes.HistoryEventTypeFailStateEntered, "Deployment failed")
	add(19220, sfntypes.HistoryEventTypeExecutionFailed, func(e *sfntypes.HistoryEvent) {
		e.ExecutionFailedEventDetails = &sfntypes.ExecutionFailedEventDetails{
			Error: aws.String("HealthTimeoutError"), Cause: aws.String("not healthy in time: still pulling (model not present)"),
		}
	})
	return evs
}

func TestHistoryGolden(t *testing.T) {
	hist := convertHistory(sampleHistory())
	x := execution{ARN: "arn:aws:states:us-east-1:111122223333:execution:deploy:mistral-7b-dev", Name: "mistral-7b-dev",
		Status: "FAILED", StartDate: t0, StopDate: t0.Add(19220 * time.Millisecond), Error: "HealthTimeoutError",
		Cause: "not healthy in time: still pulling (model not present)"}
	var b bytes.Buffer
	writeExecutionHeader(&b, x)
	b.WriteString("\n" + deployment.RenderHistory(hist))
	golden(t, "history.golden", b.String())

	runs := deployment.StateRuns(hist)
	byName := map[string]deployment.StateRun{}
	for _, r := range runs {
		byName[r.Name] = r
	}
	if r := byName["Run ECS task"]; r.Retries != 1 || r.Status != "Succeeded" {
		t.Errorf("Run ECS task %+v, want one retry then success", r)
	}
	if r := runs[len(runs)-3]; r.Name != "Poll health" || r.Status != "Caught" || r.Error != "HealthTimeoutError" {
		t.Errorf("second poll %+v, want caught HealthTimeoutError", r)
	}
	if r := runs[len(runs)-1]; r.Name != "Deployment failed" || r.Status != "Failed" || r.Error != "HealthTimeoutError" {
		t.Errorf("last %+v", r)
	}
}

// fakeExecutions plays a history back a few events per poll, as a running execution grows.
type fakeExecutions struct {
	events []sfntypes.HistoryEvent
	shown  int
	step   int
	final  sfn.DescribeExecutionOutput
}

var _ Executions = (*fakeExecutions)(nil)

func (f *fakeExecutions) DescribeExecution(_ context.Context, in *sfn.DescribeExecutionInput, _ ...func(*sfn.Options)) (*sfn.DescribeExecutionOutput, error) {
	f.shown = min(f.shown+f.step, len(f.events))
	if f.shown < len(f.events) {
		return &sfn.DescribeExecutionOutput{ExecutionArn: in.ExecutionArn, Name: f.final.Name, StartDate: f.final.StartDate,
			Status: sfntypes.ExecutionStatusRunning}, nil
	}
	out := f.final
	return &out, nil
}

func (f *fakeExecutions) GetExecutionHistory(_ context.Context, in *sfn.GetExecutionHistoryInput, _ ...func(*sfn.Options)) (*sfn.GetExecutionHistoryOutput, error) {
	// Two events a page, to exercise the paging.
	start := 0
	if in.NextToken != nil {
		start, _ = strconv.Atoi(aws.ToString(in.NextToken))
	}
	end := min(start+2, f.shown)
	out := &sfn.GetExecutionHistoryOutput{Events: f.events[start:end]}
	if end < f.shown {
		out.NextToken = aws.String(strconv.Itoa(end))
	}
	return out, nil
}

func (f *fakeExecutions) StartExecution(context.Context, *sfn.StartExecutionInput, ...func(*sfn.Options)) (*sfn.StartExecutionOutput, error) {
	panic("not used")
}

func (f *fakeExecutions) ListExecutions(context.Context, *sfn.ListExecutionsInput, ...func(*sfn.Options)) (*sfn.ListExecutionsOutput, error) {
	panic("not used")
}

func TestFollowGolden(t *testing.T) {
	fake := &fakeExecutions{events: sampleHistory(), step: 7, final: sfn.DescribeExecutionOutput{
		ExecutionArn: aws.String("arn:aws:states:us-east-1:111122223333:execution:deploy:mistral-7b-dev"),
		Name:         aws.String("mistral-7b-dev"), Status: sfntypes.ExecutionStatusFailed, StartDate: &t0,
		StopDate: aws.Time(t0.Add(19220 * time.Millisecond)), Error: aws.String("HealthTimeoutError"),
		Cause: aws.String("not healthy in time: still pulling (model not present)"),
	}}
	var b bytes.Buffer
	f := &follower{Source: stepFunctions{fake}, Out: &b, Interval: time.Millisecond}
	x, err := f.follow(context.Background(), "arn:aws:states:us-east-1:111122223333:execution:deploy:mistral-7b-dev")
	if err != nil {
		t.Fatal(err)
	}
	_, ferr := finish(x)
	b.WriteString("error: " + ferr.Error() + "\n")
	golden(t, "follow-failed.golden", b.String())
}

func TestReadyGolden(t *testing.T) {
	req := events.DeployRequest{Model: "mistral:7b", Env: "dev", DeploymentID: "mistral-7b-dev"}
	plan, err := planFor(context.Background(), req, target{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	res := startResult{DeploymentID: "mistral-7b-dev", ExecutionArn: "arn:aws:states:us-east-1:111122223333:execution:deploy:mistral-7b-dev", StartDate: t0}
	writeStarted(&b, req, &plan, res)
	x := execution{Name: "mistral-7b-dev", Status: "SUCCEEDED", StartDate: t0, StopDate: t0.Add(92 * time.Second),
		Output: []byte(`{"deploymentId":"mistral-7b-dev","model":"mistral:7b","env":"dev","endpoint":"http://10.0.1.23:11434",
		"taskArn":"arn:aws:ecs:us-east-1:111122223333:task/ollama/0f3c","placement":"Fargate","instanceType":"m5.large",
		"hourlyCostUSD":0.1121,"autoStopAt":"2026-11-27T11:02:00Z","scheduleName":"ollama-ecs-mistral-7b-dev",
		"fallbacks":[{"placement":"Fargate Spot","instanceType":"m5.large","reason":"no Fargate Spot capacity"}]}`)}
	rec, err := finish(x)
	if err != nil {
		t.Fatal(err)
	}
	writeRecord(&b, x, rec, t0.Add(92*time.Second))
	res.AlreadyStarted, res.Status = true, "RUNNING"
	b.WriteString("\n")
	writeStarted(&b, req, &plan, res)
	golden(t, "deploy.golden", b.String())
}

func TestListGolden(t *testing.T) {
	now := t0.Add(3 * time.Hour)
	ds := []listedDeployment{
		{DeploymentID: "codellama-prod-1", Model: "codellama:13b", Env: "prod", Placement: "EC2 g4dn.2xlarge", InstanceType: "g4dn.2xlarge",
			Status: "RUNNING", HourlyUSD: 0.752, StartedAt: t0, UptimeSeconds: 3 * 3600, CostSoFarUSD: 0.752 * 3},
		{DeploymentID: "mistral-7b-dev", Model: "mistral:7b", Env: "dev", Placement: "Fargate Spot", InstanceType: "m5.large",
			Status: "PENDING", HourlyUSD: 0.0345, StartedAt: now.Add(-95 * time.Second), UptimeSeconds: 95, CostSoFarUSD: 0.0345 * 95 / 3600,
			AutoStopAt: now.Add(2 * time.Hour).Truncate(time.Minute)},
	}
	var b bytes.Buffer
	if err := writeDeployments(&b, ds, now); err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n")
	_ = writeDeployments(&b, nil, now)
	b.WriteString("\n")
	_ = writeStopped(&b, "mistral-7b-dev", deployment.Stopped{Tasks: []string{"arn:aws:ecs:us-east-1:111122223333:task/ollama/0f3c"},
		Schedules: []string{"ollama-ecs-mistral-7b-dev"}})
	golden(t, "list.golden", b.String())
}

func TestDeploymentID(t *testing.T) {
	for _, c := range []struct{ model, env, name, want string }{
		{"mistral:7b", "dev", "", "mistral-7b-dev"},
		{"Llama2 7B", "prod", "", "llama2-7b-prod"},
		{"llama3.1:8b", "", "team-a", "llama3-1-8b-dev-team-a"},
		{"user/a-very-long-model-name:with-a-long-tag", "prod", "", ""},
	} {
		got := deploymentID(c.model, c.env, c.name)
		if !events.ValidDeploymentID(got) || (c.want != "" && got != c.want) {
			t.Errorf("deploymentID(%q, %q, %q) = %q, want %q (valid)", c.model, c.env, c.name, got, c.want)
		}
		if again := deploymentID(c.model, c.env, c.name); again != got {
			t.Errorf("not deterministic: %q then %q", got, again)
		}
	}
}

func TestEventsCommands(t *testing.T) {
	for _, kind := range []string{"deploy", "direct", "stop", "upload", "teardown"} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), []string{"events", "sample", kind}, &out, &errOut); err != nil {
			t.Fatalf("sample %s: %v", kind, err)
		}
		path := filepath.Join(t.TempDir(), kind+".json")
		if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		out.Reset()
		err := run(context.Background(), []string{"events", "validate", path, "--bucket", "ollama-ecs-models"}, &out, &errOut)
		if err != nil || !strings.Contains(out.String(), "valid "+kind+" event") {
			t.Errorf("validate %s: %v %s", kind, err, out.String())
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.json")
	_ = os.WriteFile(bad, []byte(`{"model": "mistral:7b", "instancetype": "g4dn.xlarge", "deploymentId": "abc"}`), 0o644)
	var out bytes.Buffer
	err := run(context.Background(), []string{"events", "validate", bad}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), `unknown field "instancetype"`) {
		t.Errorf("bad event: %v", err)
	}
	if err := run(context.Background(), []string{"events", "sample", "nope"}, &out, &out); exitCode(err) != 2 {
		t.Errorf("unknown kind: %v", err)
	}
}
