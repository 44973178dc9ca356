package engine_test

import (
	"context"
	"errors"
	"sync"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/ollama-ecs/ollama-ecs/local/lambdaapi"
)

// Toy handlers standing in for the project's real ones: typed errors whose
// names the toy state machine lists in ErrorEquals.

type InvalidRequestError struct{ Reason string }

func (e *InvalidRequestError) Error() string { return "invalid request: " + e.Reason }

type NoCapacityError struct{ InstanceType string }

func (e *NoCapacityError) Error() string { return "no capacity for " + e.InstanceType }

type FlakyError struct{}

func (*FlakyError) Error() string { return "transient failure" }

type toyFunctions struct {
	mu       sync.Mutex
	attempts map[string]int // Reserve calls per execution name
}

type validateIn struct {
	Model     string  `json:"model"`
	SizeGB    float64 `json:"sizeGB"`
	Execution string  `json:"execution"`
}

type validateOut struct {
	SizeGB  float64 `json:"sizeGB"`
	GPU     bool    `json:"gpu"`
	Ignored string  `json:"ignored"` // dropped by the state's ResultSelector
}

func (f *toyFunctions) validate(_ context.Context, in validateIn) (validateOut, error) {
	if in.Model == "" {
		return validateOut{}, &InvalidRequestError{Reason: "model is required"}
	}
	if in.Execution == "" {
		return validateOut{}, &InvalidRequestError{Reason: "$$.Execution.Name did not reach the handler"}
	}
	return validateOut{SizeGB: in.SizeGB, GPU: in.SizeGB > 10, Ignored: "x"}, nil
}

type reserveIn struct {
	Mode      string `json:"mode"`
	GPU       bool   `json:"gpu"`
	Execution string `json:"execution"`
}

type reserveOut struct {
	Endpoint string `json:"endpoint"`
}

func (f *toyFunctions) reserve(_ context.Context, in reserveIn) (reserveOut, error) {
	f.mu.Lock()
	f.attempts[in.Execution]++
	attempt := f.attempts[in.Execution]
	f.mu.Unlock()
	switch in.Mode {
	case "nocap":
		return reserveOut{}, &NoCapacityError{InstanceType: "g4dn.xlarge"}
	case "boom":
		return reserveOut{}, errors.New("boom")
	case "flaky":
		if attempt == 1 {
			return reserveOut{}, &FlakyError{}
		}
	}
	return reserveOut{Endpoint: "http://127.0.0.1:11434"}, nil
}

func (f *toyFunctions) reserveAttempts(execution string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.attempts[execution]
}

type pollIn struct {
	Polls       int `json:"polls"`
	ReadyAfter  int `json:"readyAfter"`
	WaitSeconds int `json:"waitSeconds"`
}

type pollOut struct {
	Ready           bool `json:"ready"`
	NextWaitSeconds int  `json:"nextWaitSeconds"`
}

func (f *toyFunctions) poll(_ context.Context, in pollIn) (pollOut, error) {
	return pollOut{Ready: in.Polls >= in.ReadyAfter, NextWaitSeconds: in.WaitSeconds}, nil
}

func (f *toyFunctions) handlers() map[string]lambda.Handler {
	return map[string]lambda.Handler{
		"ToyValidate": lambdaapi.Func(f.validate),
		"ToyReserve":  lambdaapi.Func(f.reserve),
		"ToyPoll":     lambdaapi.Func(f.poll),
		"ToyEcho":     lambdaapi.Func(func(in map[string]any) (map[string]any, error) { return in, nil }),
	}
}
