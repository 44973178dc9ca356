package engine_test

import (
	"flag"
	"os"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

var update = flag.Bool("update", false, "rewrite testdata/history.golden")

// TestRenderHistory renders a fixed history covering a retry, a caught
// error, a loop visiting a state twice, a Map iteration and a state still
// running, against testdata/history.golden.
func TestRenderHistory(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	iter := 1
	ev := func(ms int, typ, state, stateType string) deployment.HistoryEvent {
		return deployment.HistoryEvent{Type: typ, Timestamp: at(ms), StateName: state, StateType: stateType}
	}
	failed := func(ms int, state, stateType, err, cause string) deployment.HistoryEvent {
		e := ev(ms, "StateFailed", state, stateType)
		e.Error, e.Cause = err, cause
		return e
	}
	retried := ev(1300, "StateRetried", "Validate", "Task")
	retried.RetryAttempt = 1
	mapped := ev(5000, "StateEntered", "Resize", "Task")
	mapped.MapIteration = &iter
	mappedExit := ev(5040, "StateExited", "Resize", "Task")
	mappedExit.MapIteration = &iter
	events := []deployment.HistoryEvent{
		{Type: "ExecutionStarted", Timestamp: at(0)},
		ev(1, "StateEntered", "Validate", "Task"),
		failed(300, "Validate", "Task", "Lambda.ServiceException", "injected"),
		retried,
		ev(1420, "StateExited", "Validate", "Task"),
		ev(1420, "StateEntered", "WaitForHealth", "Wait"),
		ev(3420, "StateExited", "WaitForHealth", "Wait"),
		ev(3421, "StateEntered", "WaitForHealth", "Wait"),
		ev(4421, "StateExited", "WaitForHealth", "Wait"),
		ev(4422, "StateEntered", "Reserve", "Task"),
		failed(4500, "Reserve", "Task", "NoCapacityError",
			`{"errorMessage":"no capacity for g4dn.xlarge in any zone of us-east-1, tried 3 types","errorType":"NoCapacityError"}`),
		ev(4500, "StateCaught", "Reserve", "Task"),
		ev(4500, "StateExited", "Reserve", "Task"),
		mapped,
		mappedExit,
		ev(5100, "StateEntered", "Poll", "Task"),
		ev(6100, "StateEntered", "Never", "Pass"), // history ends while Poll and Never run
	}
	got := deployment.RenderHistory(events)
	const golden = "testdata/history.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -run TestRenderHistory -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("RenderHistory:\n%s\nwant:\n%s", got, want)
	}
}
