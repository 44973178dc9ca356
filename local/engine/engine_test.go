package engine_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/lambdaapi"
)

// rig is one engine process and one Lambda endpoint shared by the tests of
// this package, as in local mode: many executions on one engine.
type rig struct {
	eng    *engine.Engine
	lambda *lambdaapi.Server
	toys   *toyFunctions
	faults *faults
	err    error
	close  func()
}

var (
	shared     rig
	sharedOnce sync.Once
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.close != nil {
		shared.close()
	}
	os.Exit(code)
}

// engineForTest returns the shared rig, starting it on first use. A missing
// install fails under CI and skips with the command to run otherwise.
func engineForTest(t *testing.T) *rig {
	t.Helper()
	sharedOnce.Do(func() { shared = startRig() })
	if shared.err != nil {
		if errors.Is(shared.err, engine.ErrNotInstalled) && os.Getenv("CI") == "" {
			t.Skipf("local engine not installed: run `make engine` (%v)", shared.err)
		}
		t.Fatal(shared.err)
	}
	return &shared
}

func startRig() rig {
	r := rig{toys: &toyFunctions{attempts: map[string]int{}}, faults: &faults{queued: map[string][]error{}}}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	r.lambda = lambdaapi.NewServer(r.toys.handlers(), lambdaapi.WithInterceptor(r.faults.intercept), lambdaapi.WithLogger(logger))
	url, closeLambda, err := r.lambda.Listen("127.0.0.1:0")
	if err != nil {
		r.err = err
		return r
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	r.eng, err = engine.Start(ctx, engine.Options{LambdaEndpoint: url, Logger: logger})
	if err != nil {
		_ = closeLambda()
		r.err = err
		return r
	}
	fmt.Fprintf(os.Stderr, "engine started in %v\n", time.Since(start).Round(time.Millisecond))
	r.close = func() {
		_ = r.eng.Close()
		_ = closeLambda()
	}
	return r
}

// faults queues Invoke API failures per function and execution name, for the
// interceptor to hand out in order.
type faults struct {
	mu     sync.Mutex
	queued map[string][]error
}

func (f *faults) add(function, execution string, errs ...error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queued[function+"/"+execution] = append(f.queued[function+"/"+execution], errs...)
}

func (f *faults) intercept(_ context.Context, function string, payload []byte) error {
	var in struct {
		Execution string `json:"execution"`
	}
	_ = json.Unmarshal(payload, &in)
	f.mu.Lock()
	defer f.mu.Unlock()
	key := function + "/" + in.Execution
	if q := f.queued[key]; len(q) > 0 {
		f.queued[key] = q[1:]
		return q[0]
	}
	return nil
}

func readDefinition(t *testing.T, name string) []byte {
	t.Helper()
	def, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return def
}

func run(t *testing.T, r *rig, def []byte, name string, input any, opts ...engine.ExecutionOption) engine.Execution {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	arn, err := r.eng.StartExecution(ctx, def, name, input, opts...)
	if err != nil {
		t.Fatalf("StartExecution: %v", err)
	}
	x, err := r.eng.Wait(ctx, arn)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	t.Logf("%s %s in %v\n%s", x.Name, x.Status, x.StopDate.Sub(x.StartDate), deployment.RenderHistory(x.Events))
	return x
}

func eventsOf(x engine.Execution, typ, state string) []deployment.HistoryEvent {
	var out []deployment.HistoryEvent
	for _, ev := range x.Events {
		if ev.Type == typ && (state == "" || ev.StateName == state) {
			out = append(out, ev)
		}
	}
	return out
}

type toyInput struct {
	Model       string  `json:"model"`
	SizeGB      float64 `json:"sizeGB"`
	Mode        string  `json:"mode"`
	ReadyAfter  int     `json:"readyAfter"`
	WaitSeconds int     `json:"waitSeconds"`
}

// TestToyWorkflow runs the toy state machine through each path, concurrently
// on one engine. Each case checks the outcome and the history that proves
// the ASL feature it is about.
func TestToyWorkflow(t *testing.T) {
	r := engineForTest(t)
	def := readDefinition(t, "toy.asl.json")
	fastWait := engine.WithWaitOverride("WaitForHealth", 5*time.Millisecond)
	tests := []struct {
		name   string
		input  toyInput
		faults map[string][]error
		status engine.Status
		error  string
		check  func(t *testing.T, x engine.Execution)
	}{{
		name:   "succeeds-after-polling",
		input:  toyInput{Model: "m", SizeGB: 20, Mode: "ok", ReadyAfter: 2, WaitSeconds: 3600},
		status: engine.StatusSucceeded,
		check: func(t *testing.T, x engine.Execution) {
			assertJSON(t, "output", x.Output, `{"endpoint":"http://127.0.0.1:11434","polls":3,"gpu":true}`)
			if n := len(eventsOf(x, deployment.EventStateEntered, "Poll")); n != 3 {
				t.Errorf("Poll entered %d times, want 3", n)
			}
			// ResultSelector kept two fields; ResultPath put them under $.validated.
			exited := eventsOf(x, deployment.EventStateExited, "Validate")
			var out struct{ Validated json.RawMessage }
			if len(exited) != 1 || json.Unmarshal(exited[0].Output, &out) != nil {
				t.Fatalf("Validate exited events: %+v", exited)
			}
			assertJSON(t, "$.validated", out.Validated, `{"sizeGB":20,"gpu":true}`)
		},
	}, {
		name:   "typed-error-caught-by-name",
		input:  toyInput{Model: "m", SizeGB: 20, Mode: "nocap"},
		status: engine.StatusFailed,
		error:  "NoCapacityError",
		check: func(t *testing.T, x engine.Execution) {
			caught := eventsOf(x, deployment.EventStateCaught, "Reserve")
			if len(caught) != 1 || !slices.Equal(caught[0].ErrorEquals, []string{"NoCapacityError"}) {
				t.Errorf("StateCaught on Reserve: %+v; want the NoCapacityError catcher", caught)
			}
			// Cause is the function's error payload, as in Step Functions.
			var cause struct{ ErrorType, ErrorMessage string }
			if err := json.Unmarshal([]byte(x.Cause), &cause); err != nil ||
				cause.ErrorType != "NoCapacityError" || cause.ErrorMessage != "no capacity for g4dn.xlarge" {
				t.Errorf("cause %q is not the Lambda error payload", x.Cause)
			}
		},
	}, {
		name:   "untyped-error-caught-by-States.ALL",
		input:  toyInput{Model: "m", SizeGB: 20, Mode: "boom"},
		status: engine.StatusFailed,
		error:  "errorString",
		check: func(t *testing.T, x engine.Execution) {
			caught := eventsOf(x, deployment.EventStateCaught, "Reserve")
			if len(caught) != 1 || !slices.Equal(caught[0].ErrorEquals, []string{"States.ALL"}) {
				t.Errorf("StateCaught on Reserve: %+v; want the States.ALL catcher", caught)
			}
		},
	}, {
		name:   "retried-then-succeeds",
		input:  toyInput{Model: "m", SizeGB: 2, Mode: "flaky", ReadyAfter: 0},
		status: engine.StatusSucceeded,
		check: func(t *testing.T, x engine.Execution) {
			retried := eventsOf(x, deployment.EventStateRetried, "Reserve")
			if len(retried) != 1 || retried[0].RetryAttempt != 1 || !slices.Equal(retried[0].ErrorEquals, []string{"FlakyError"}) {
				t.Errorf("StateRetried on Reserve: %+v", retried)
			}
			if n := r.toys.reserveAttempts(x.Name); n != 2 {
				t.Errorf("ToyReserve ran %d times, want 2", n)
			}
			assertJSON(t, "output", x.Output, `{"endpoint":"http://127.0.0.1:11434","polls":1,"gpu":false}`)
		},
	}, {
		name:  "lambda-service-errors-retried",
		input: toyInput{Model: "m", SizeGB: 2, Mode: "ok"},
		faults: map[string][]error{"ToyValidate": {
			lambdaapi.ServiceException("injected"), lambdaapi.TooManyRequests("injected"),
		}},
		status: engine.StatusSucceeded,
		check: func(t *testing.T, x engine.Execution) {
			failed := eventsOf(x, deployment.EventStateFailed, "Validate")
			var names []string
			for _, ev := range failed {
				names = append(names, ev.Error)
			}
			if !slices.Equal(names, []string{"Lambda.ServiceException", "Lambda.TooManyRequestsException"}) {
				t.Errorf("Validate failures %v", names)
			}
			// FULL jitter: each pause is at most IntervalSeconds*BackoffRate^n, capped by MaxDelaySeconds.
			retried := eventsOf(x, deployment.EventStateRetried, "Validate")
			if len(retried) != 2 {
				t.Fatalf("Validate retried %d times, want 2", len(retried))
			}
			for i, max := range []time.Duration{time.Second, 2 * time.Second} {
				if gap := retried[i].Timestamp.Sub(failed[i].Timestamp); gap > max+200*time.Millisecond {
					t.Errorf("retry %d paused %v, more than %v", i+1, gap, max)
				}
			}
		},
	}, {
		name:   "fail-state-with-error-and-cause-paths",
		input:  toyInput{Model: "", SizeGB: 2},
		status: engine.StatusFailed,
		error:  "InvalidRequestError",
		check: func(t *testing.T, x engine.Execution) {
			if !strings.Contains(x.Cause, "model is required") {
				t.Errorf("cause %q", x.Cause)
			}
			if n := len(eventsOf(x, deployment.EventStateEntered, "Rejected")); n != 1 {
				t.Errorf("Rejected entered %d times", n)
			}
		},
	}, {
		name:   "choice-to-fail-with-plain-error-and-cause",
		input:  toyInput{Model: "m", SizeGB: 200},
		status: engine.StatusFailed,
		error:  "ModelTooLarge",
		check: func(t *testing.T, x engine.Execution) {
			if x.Cause != "the model does not fit any configuration" {
				t.Errorf("cause %q", x.Cause)
			}
		},
	}, {
		name:   "invoke-api-not-found-is-Lambda.ResourceNotFoundException",
		input:  toyInput{Model: "m", SizeGB: 2, Mode: "ok"},
		faults: map[string][]error{"ToyReserve": {&lambdaapi.APIError{Status: 404, Type: "ResourceNotFoundException", Message: "gone"}}},
		status: engine.StatusFailed,
		error:  "Lambda.ResourceNotFoundException",
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name := strings.ReplaceAll(tc.name, ".", "-") + fmt.Sprintf("-%d", time.Now().UnixNano())
			for fn, errs := range tc.faults {
				r.faults.add(fn, name, errs...)
			}
			x := run(t, r, def, name, tc.input, fastWait)
			if x.Status != tc.status || x.Error != tc.error {
				t.Fatalf("got %s %q (cause %q), want %s %q", x.Status, x.Error, x.Cause, tc.status, tc.error)
			}
			if tc.check != nil {
				tc.check(t, x)
			}
		})
	}
}

// TestWaitSecondsPath checks that, without an override, a Wait state pauses
// for the seconds its SecondsPath names.
func TestWaitSecondsPath(t *testing.T) {
	r := engineForTest(t)
	x := run(t, r, readDefinition(t, "toy.asl.json"), "", toyInput{Model: "m", SizeGB: 2, Mode: "ok", ReadyAfter: 1, WaitSeconds: 1})
	if x.Status != engine.StatusSucceeded {
		t.Fatalf("status %s %s", x.Status, x.Error)
	}
	for _, run := range deployment.StateRuns(x.Events) {
		if run.Name == "WaitForHealth" && (run.Duration < 950*time.Millisecond || run.Duration > 1500*time.Millisecond) {
			t.Errorf("WaitForHealth lasted %v, want about 1s", run.Duration)
		}
	}
}

// TestNamesListAndStop checks StartExecution's name idempotency, List and Stop
// on an execution parked in a one-hour Wait.
func TestNamesListAndStop(t *testing.T) {
	r := engineForTest(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	def := readDefinition(t, "toy.asl.json")
	in := toyInput{Model: "m", SizeGB: 2, Mode: "ok", ReadyAfter: 99, WaitSeconds: 3600}
	name := fmt.Sprintf("parked-%d", time.Now().UnixNano())
	arn, err := r.eng.StartExecution(ctx, def, name, in, engine.WithStateMachineName("toy"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "arn:aws:states:us-east-1:000000000000:execution:toy:" + name; arn != want {
		t.Errorf("arn %s, want %s", arn, want)
	}
	again, err := r.eng.StartExecution(ctx, def, name, in, engine.WithStateMachineName("toy"))
	if err != nil || again != arn {
		t.Errorf("same name and input while running: %q, %v; want the same execution", again, err)
	}
	other := in
	other.Model = "other"
	if _, err := r.eng.StartExecution(ctx, def, name, other, engine.WithStateMachineName("toy")); !errors.Is(err, engine.ErrExecutionAlreadyExists) {
		t.Errorf("same name, other input: %v; want ErrExecutionAlreadyExists", err)
	}
	list, err := r.eng.List(ctx, "toy")
	if err != nil {
		t.Fatal(err)
	}
	if i := slices.IndexFunc(list, func(x engine.Execution) bool { return x.ExecutionArn == arn }); i < 0 || list[i].Status != engine.StatusRunning {
		t.Errorf("List(toy) = %+v; want %s RUNNING", list, arn)
	}
	if err := r.eng.Stop(ctx, arn); err != nil {
		t.Fatal(err)
	}
	x, err := r.eng.Describe(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	if x.Status != engine.StatusAborted || x.StopDate.IsZero() || eventsOf(x, "ExecutionAborted", "") == nil {
		t.Errorf("after Stop: %s stop %v\n%s", x.Status, x.StopDate, deployment.RenderHistory(x.Events))
	}
	if _, err := r.eng.StartExecution(ctx, def, name, in, engine.WithStateMachineName("toy")); !errors.Is(err, engine.ErrExecutionAlreadyExists) {
		t.Errorf("reusing the name of a closed execution: %v; want ErrExecutionAlreadyExists", err)
	}
	if _, err := r.eng.Describe(ctx, arn+"-nope"); !errors.Is(err, engine.ErrExecutionDoesNotExist) {
		t.Errorf("Describe of an unknown ARN: %v", err)
	}
}

func TestValidate(t *testing.T) {
	r := engineForTest(t)
	ctx := context.Background()
	if err := r.eng.Validate(ctx, readDefinition(t, "toy.asl.json")); err != nil {
		t.Errorf("toy definition: %v", err)
	}
	broken := readDefinition(t, "broken.asl.json")
	err := r.eng.Validate(ctx, broken)
	var invalid *engine.InvalidDefinitionError
	if !errors.As(err, &invalid) || !errors.Is(err, engine.ErrInvalidDefinition) {
		t.Fatalf("broken definition: %v; want *InvalidDefinitionError", err)
	}
	var codes []string
	for _, p := range invalid.Problems {
		codes = append(codes, p.Code)
	}
	for _, want := range []string{"MISSING_TRANSITION_TARGET"} {
		if !slices.Contains(codes, want) {
			t.Errorf("problems %v lack %s", invalid.Problems, want)
		}
	}
	if err := r.eng.Validate(ctx, []byte(`{"StartAt":`)); !errors.Is(err, engine.ErrInvalidDefinition) {
		t.Errorf("truncated JSON: %v", err)
	}
	if _, err := r.eng.StartExecution(ctx, broken, "", nil); !errors.Is(err, engine.ErrInvalidDefinition) {
		t.Errorf("StartExecution of a broken definition: %v; want ErrInvalidDefinition", err)
	}
}

// TestThreeStateOverhead measures what the engine adds per execution of
// three Lambda Task states with handlers that do nothing.
func TestThreeStateOverhead(t *testing.T) {
	r := engineForTest(t)
	def := readDefinition(t, "three-tasks.asl.json")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 20
	// The first run of a definition pays for its validation (a few hundred ms).
	if x := run(t, r, def, "", nil); x.Status != engine.StatusSucceeded {
		t.Fatalf("warm-up: %s %s", x.Status, x.Cause)
	}
	start := time.Now()
	for i := 0; i < n; i++ {
		arn, err := r.eng.StartExecution(ctx, def, "", map[string]int{"i": i})
		if err != nil {
			t.Fatal(err)
		}
		x, err := r.eng.Wait(ctx, arn)
		if err != nil || x.Status != engine.StatusSucceeded {
			t.Fatalf("%v %s %s", err, x.Status, x.Cause)
		}
	}
	sequential := time.Since(start) / n

	start = time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Go(func() {
			arn, err := r.eng.StartExecution(ctx, def, "", map[string]int{"i": i})
			if err == nil {
				var x engine.Execution
				if x, err = r.eng.Wait(ctx, arn); err == nil && x.Status != engine.StatusSucceeded {
					err = fmt.Errorf("%s: %s %s", arn, x.Status, x.Cause)
				}
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	concurrent := time.Since(start)
	t.Logf("3-task execution: %v each sequentially; %d concurrently in %v", sequential, n, concurrent)
	fmt.Fprintf(os.Stderr, "3-task execution: %v each sequentially; %d concurrently in %v\n", sequential.Round(time.Microsecond), n, concurrent.Round(time.Millisecond))
	if sequential > 2*time.Second {
		t.Errorf("a 3-task execution took %v; the engine is far slower than expected", sequential)
	}
}

func BenchmarkThreeTaskExecution(b *testing.B) {
	sharedOnce.Do(func() { shared = startRig() })
	if shared.err != nil {
		b.Fatal(shared.err)
	}
	def, err := os.ReadFile("testdata/three-tasks.asl.json")
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for b.Loop() {
		arn, err := shared.eng.StartExecution(ctx, def, "", nil)
		if err != nil {
			b.Fatal(err)
		}
		if x, err := shared.eng.Wait(ctx, arn); err != nil || x.Status != engine.StatusSucceeded {
			b.Fatalf("%v %s", err, x.Status)
		}
	}
}

// TestCloseLeavesNothing starts a second engine and checks Close ends its
// whole process group.
func TestCloseLeavesNothing(t *testing.T) {
	engineForTest(t) // skip or fail the same way when not installed
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e, err := engine.Start(ctx, engine.Options{})
	if err != nil {
		t.Fatal(err)
	}
	pid := e.PID()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process group %d still exists after Close (kill: %v)", pid, err)
	}
	_ = e.Close() // a second Close is harmless
}

func TestStartRefusesRemoteLambdaEndpoint(t *testing.T) {
	_, err := engine.Start(context.Background(), engine.Options{LambdaEndpoint: "http://192.0.2.1:9001"})
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("Start with a remote Lambda endpoint: %v", err)
	}
}

func assertJSON(t *testing.T, what string, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("%s: %v in %s", what, err, got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	gb, _ := json.Marshal(g)
	wb, _ := json.Marshal(w)
	if string(gb) != string(wb) {
		t.Errorf("%s = %s, want %s", what, gb, wb)
	}
}
