package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors the engine answers with; match them with errors.Is.
var (
	ErrExecutionAlreadyExists = errors.New("ExecutionAlreadyExists")
	ErrExecutionDoesNotExist  = errors.New("ExecutionDoesNotExist")
	ErrInvalidDefinition      = errors.New("InvalidDefinition")
)

// APIError is an error answer from the engine server, e.g. Type
// "ExecutionAlreadyExists" (the Step Functions error code).
type APIError struct {
	Status  int
	Type    string
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("engine: %s: %s", e.Type, e.Message) }

// Is matches the sentinel errors of this package by Type.
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrExecutionAlreadyExists, ErrExecutionDoesNotExist, ErrInvalidDefinition:
		return e.Type == target.Error()
	}
	return false
}

// Problem is one finding of definition validation.
type Problem struct {
	Code    string `json:"code"` // asl-validator's error code, e.g. MISSING_TRANSITION_TARGET
	Message string `json:"message"`
}

// InvalidDefinitionError lists why a definition is not valid ASL.
type InvalidDefinitionError struct{ Problems []Problem }

func (e *InvalidDefinitionError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		msgs[i] = p.Code + ": " + p.Message
	}
	return "engine: invalid state machine definition: " + strings.Join(msgs, "; ")
}

// Is makes an InvalidDefinitionError match ErrInvalidDefinition.
func (e *InvalidDefinitionError) Is(target error) bool { return target == ErrInvalidDefinition }

type startRequest struct {
	Definition             string          `json:"definition"`
	Name                   string          `json:"name,omitempty"`
	Input                  json.RawMessage `json:"input"`
	StateMachineName       string          `json:"stateMachineName"`
	WaitTimeOverrides      map[string]int  `json:"waitTimeOverrides,omitempty"`
	RetryIntervalOverrides map[string]int  `json:"retryIntervalOverrides,omitempty"`
}

// ExecutionOption adjusts one StartExecution.
type ExecutionOption func(*startRequest)

// WithStateMachineName sets the state machine's name used in ARNs and in
// name-uniqueness checks (default "deploy").
func WithStateMachineName(name string) ExecutionOption {
	return func(r *startRequest) { r.StateMachineName = name }
}

// WithWaitOverride makes the Wait state named state pause for d instead of
// its Seconds/SecondsPath/Timestamp, so polling loops run fast locally.
func WithWaitOverride(state string, d time.Duration) ExecutionOption {
	return func(r *startRequest) {
		if r.WaitTimeOverrides == nil {
			r.WaitTimeOverrides = map[string]int{}
		}
		r.WaitTimeOverrides[state] = int(d.Milliseconds())
	}
}

// WithRetryIntervalOverride makes every retry of state pause for d instead
// of its IntervalSeconds/BackoffRate/MaxDelaySeconds/JitterStrategy.
func WithRetryIntervalOverride(state string, d time.Duration) ExecutionOption {
	return func(r *startRequest) {
		if r.RetryIntervalOverrides == nil {
			r.RetryIntervalOverrides = map[string]int{}
		}
		r.RetryIntervalOverrides[state] = int(d.Milliseconds())
	}
}

// StartExecution starts a run of definition (ASL JSON) with input (any value
// that marshals to JSON; a json.RawMessage is sent as is; nil means {}).
// name may be empty for a generated one. Like Step Functions, starting the
// same name again with the same input while it runs returns the same ARN;
// otherwise it fails with ErrExecutionAlreadyExists.
func (e *Engine) StartExecution(ctx context.Context, definition []byte, name string, input any, opts ...ExecutionOption) (string, error) {
	raw, err := marshalInput(input)
	if err != nil {
		return "", err
	}
	req := startRequest{Definition: string(definition), Name: name, Input: raw, StateMachineName: "deploy"}
	for _, o := range opts {
		o(&req)
	}
	var res struct {
		ExecutionArn string `json:"executionArn"`
	}
	if err := e.do(ctx, http.MethodPost, "/executions", req, &res); err != nil {
		return "", err
	}
	return res.ExecutionArn, nil
}

func marshalInput(input any) (json.RawMessage, error) {
	switch v := input.(type) {
	case nil:
		return json.RawMessage(`{}`), nil
	case json.RawMessage:
		if !json.Valid(v) {
			return nil, errors.New("engine: execution input is not valid JSON")
		}
		return v, nil
	}
	b, err := json.Marshal(input)
	if err != nil {
		return nil, fmt.Errorf("engine: marshalling execution input: %w", err)
	}
	return b, nil
}

// Describe returns the execution with its history so far.
func (e *Engine) Describe(ctx context.Context, arn string) (Execution, error) {
	var x Execution
	err := e.do(ctx, http.MethodGet, "/executions/"+url.PathEscape(arn), nil, &x)
	return x, err
}

// longPoll is how long one Wait request holds on the server.
const longPoll = 20 * time.Second

// Wait blocks until the execution finishes or ctx ends, and returns it with
// its full history. A finished execution is not an error, whatever its status.
func (e *Engine) Wait(ctx context.Context, arn string) (Execution, error) {
	path := fmt.Sprintf("/executions/%s?waitMs=%d", url.PathEscape(arn), longPoll.Milliseconds())
	for {
		var x Execution
		if err := e.do(ctx, http.MethodGet, path, nil, &x); err != nil {
			return x, err
		}
		if x.Done() {
			return x, nil
		}
		if err := ctx.Err(); err != nil {
			return x, fmt.Errorf("engine: waiting for %s: %w", arn, err)
		}
	}
}

// List returns every execution the engine knows, oldest first, without
// histories or payloads. stateMachineName filters when not empty.
func (e *Engine) List(ctx context.Context, stateMachineName string) ([]Execution, error) {
	path := "/executions"
	if stateMachineName != "" {
		path += "?stateMachineName=" + url.QueryEscape(stateMachineName)
	}
	var res struct {
		Executions []Execution `json:"executions"`
	}
	if err := e.do(ctx, http.MethodGet, path, nil, &res); err != nil {
		return nil, err
	}
	return res.Executions, nil
}

// Stop aborts a running execution (status ABORTED). A Task already calling
// its function is not interrupted, as in Step Functions. Stopping a finished
// execution changes nothing.
func (e *Engine) Stop(ctx context.Context, arn string) error {
	return e.do(ctx, http.MethodPost, "/executions/"+url.PathEscape(arn)+"/stop", struct{}{}, nil)
}

// Validate checks definition with asl-validator (JSON schema, transitions,
// JSONPaths and ARNs) and returns an *InvalidDefinitionError listing the
// problems, or nil.
func (e *Engine) Validate(ctx context.Context, definition []byte) error {
	var res struct {
		Valid  bool      `json:"valid"`
		Errors []Problem `json:"errors"`
	}
	if err := e.do(ctx, http.MethodPost, "/validate", map[string]string{"definition": string(definition)}, &res); err != nil {
		return err
	}
	if !res.Valid {
		return &InvalidDefinitionError{Problems: res.Errors}
	}
	return nil
}

// do sends one JSON request; out may be nil.
func (e *Engine) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("engine: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, e.baseURL+path, body)
	if err != nil {
		return fmt.Errorf("engine: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := e.http.Do(req)
	if err != nil {
		select {
		case <-e.exited:
			return fmt.Errorf("engine: process has exited (%v): %w", e.exitErr, err)
		default:
		}
		return fmt.Errorf("engine: %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return fmt.Errorf("engine: reading answer to %s %s: %w", method, path, err)
	}
	if res.StatusCode != http.StatusOK {
		var apiErr struct {
			Type    string `json:"__type"`
			Message string `json:"message"`
		}
		_ = json.Unmarshal(data, &apiErr)
		if apiErr.Type == "" {
			apiErr.Type, apiErr.Message = "Unknown", strings.TrimSpace(string(data))
		}
		return &APIError{Status: res.StatusCode, Type: apiErr.Type, Message: apiErr.Message}
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("engine: decoding answer to %s %s: %w", method, path, err)
	}
	return nil
}
