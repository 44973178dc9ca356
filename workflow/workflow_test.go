package workflow

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/deployment"
)

type state struct {
	Type     string
	Resource string
	Next     string
	Default  string
	End      bool
	Retry    []struct{ ErrorEquals []string }
	Catch    []struct {
		ErrorEquals []string
		Next        string
	}
	Choices []struct{ Next string }
}

func definition(t *testing.T) (startAt string, states map[string]state) {
	t.Helper()
	var d struct {
		StartAt string
		States  map[string]state
	}
	if err := json.Unmarshal(Definition, &d); err != nil {
		t.Fatal(err)
	}
	return d.StartAt, d.States
}

// TestTasksMapToFunctions checks each Task state names a placeholder whose function folder exists, and each
// step folder is used.
func TestTasksMapToFunctions(t *testing.T) {
	_, states := definition(t)
	used := map[string]bool{}
	for name, s := range states {
		if s.Type != "Task" {
			continue
		}
		step := strings.TrimSuffix(strings.TrimPrefix(s.Resource, "${"), "FunctionArn}")
		fn, ok := Functions[step]
		if !ok {
			t.Errorf("state %q: resource %s maps to no function", name, s.Resource)
			continue
		}
		if _, err := os.Stat(filepath.Join("..", "functions", fn, "main.go")); err != nil {
			t.Errorf("state %q: functions/%s/main.go: %v", name, fn, err)
		}
		used[fn] = true
	}
	for _, fn := range Functions {
		if !used[fn] {
			t.Errorf("function %s is used by no Task state", fn)
		}
	}
}

// TestErrorNamesAreGoTypes keeps the ASL's error names and the Go error types equal: each ErrorEquals name is a
// type a step returns, and each such type is handled somewhere.
func TestErrorNamesAreGoTypes(t *testing.T) {
	_, states := definition(t)
	inASL := map[string]bool{}
	for _, s := range states {
		for _, r := range s.Retry {
			for _, e := range r.ErrorEquals {
				inASL[e] = true
			}
		}
		for _, c := range s.Catch {
			for _, e := range c.ErrorEquals {
				inASL[e] = true
			}
		}
	}
	var asl, goTypes []string
	for e := range inASL {
		// Step Functions' and Lambda's own names; Sandbox.Timedout is the runtime's for a function that timed out.
		if !strings.HasPrefix(e, "States.") && !strings.HasPrefix(e, "Lambda.") && !strings.HasPrefix(e, "Sandbox.") {
			asl = append(asl, e)
		}
	}
	for _, e := range deployment.ErrorTypes {
		goTypes = append(goTypes, reflect.TypeOf(e).Elem().Name())
	}
	sort.Strings(asl)
	sort.Strings(goTypes)
	for _, e := range asl {
		if !slices.Contains(goTypes, e) {
			t.Errorf("ASL names %s, which no step returns", e)
		}
	}
	// A type caught only by States.ALL is handled, but naming it keeps the contract explicit.
	for _, e := range goTypes {
		if !slices.Contains(asl, e) {
			t.Errorf("step error %s is named in no ErrorEquals", e)
		}
	}
}

// TestTasksRetryLambdaServiceErrors: every Task state retries each error the Lambda service itself may raise (as
// opposed to the function's), ClientExecutionTimeoutException included.
func TestTasksRetryLambdaServiceErrors(t *testing.T) {
	_, states := definition(t)
	want := []string{"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
		"Lambda.ClientExecutionTimeoutException", "Lambda.TooManyRequestsException"}
	for name, s := range states {
		if s.Type != "Task" {
			continue
		}
		var retried []string
		for _, r := range s.Retry {
			retried = append(retried, r.ErrorEquals...)
		}
		for _, e := range want {
			if !slices.Contains(retried, e) {
				t.Errorf("state %q does not retry %s", name, e)
			}
		}
	}
}

// TestGraph checks every transition lands on a state, every state is reachable, and the walk can end.
func TestGraph(t *testing.T) {
	start, states := definition(t)
	seen := map[string]bool{}
	var walk func(string)
	walk = func(name string) {
		if name == "" || seen[name] {
			return
		}
		s, ok := states[name]
		if !ok {
			t.Errorf("transition to missing state %q", name)
			return
		}
		seen[name] = true
		walk(s.Next)
		walk(s.Default)
		for _, c := range s.Choices {
			walk(c.Next)
		}
		for _, c := range s.Catch {
			walk(c.Next)
		}
	}
	walk(start)
	for name := range states {
		if !seen[name] {
			t.Errorf("state %q is unreachable", name)
		}
	}
}

func TestSubstitute(t *testing.T) {
	if _, err := Substitute(map[string]string{"ValidateFunctionArn": "x"}); err == nil {
		t.Error("missing placeholders accepted")
	}
	def, err := LocalDefinition("us-east-1", "000000000000")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(def), "${") || !strings.Contains(string(def), "function:runtask") {
		t.Errorf("local definition not substituted")
	}
	if got := Placeholders(); len(got) != len(Functions) {
		t.Errorf("placeholders %v", got)
	}
}

// TestRecordMatchesDefinition keeps Record's fields and the "Deployment ready" state's output equal.
func TestRecordMatchesDefinition(t *testing.T) {
	var d struct {
		States map[string]struct{ Parameters map[string]string }
	}
	if err := json.Unmarshal(Definition, &d); err != nil {
		t.Fatal(err)
	}
	var inASL, inGo []string
	for k := range d.States["Deployment ready"].Parameters {
		inASL = append(inASL, strings.TrimSuffix(k, ".$"))
	}
	rt := reflect.TypeOf(deployment.Record{})
	for i := range rt.NumField() {
		name, _, _ := strings.Cut(rt.Field(i).Tag.Get("json"), ",")
		inGo = append(inGo, name)
	}
	sort.Strings(inASL)
	sort.Strings(inGo)
	if !slices.Equal(inASL, inGo) {
		t.Errorf("Deployment ready has %v, Record has %v", inASL, inGo)
	}
}
