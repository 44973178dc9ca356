// Package lambdaapi serves Go Lambda handlers behind the Lambda Invoke API
// (POST /2015-03-31/functions/{FunctionName}/invocations), so that a real AWS
// SDK client, such as the one inside the local Step Functions engine, can call
// the project's real handlers on this machine. Errors are answered the way
// Lambda answers them, so the engine sees the same error names as in AWS.
package lambdaapi

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
)

// InvokePath is the route of the Invoke API; FunctionName is a bare name, a
// partial ARN (ACCOUNT:function:NAME) or a full ARN, optionally qualified.
const InvokePath = "/2015-03-31/functions/{FunctionName}/invocations"

// Interceptor runs before a function's handler. Returning an *APIError makes
// the Invoke API itself fail (for example ServiceException, which a state
// machine sees as Lambda.ServiceException); returning any other error makes it
// look as if the function returned that error. Returning nil lets the call
// through.
type Interceptor func(ctx context.Context, function string, payload []byte) error

// Server is an http.Handler for the Lambda Invoke API over a fixed set of
// functions, keyed by function name.
type Server struct {
	functions map[string]lambda.Handler
	intercept Interceptor
	logger    *slog.Logger
	region    string
	account   string
	timeout   time.Duration
	mux       *http.ServeMux

	mu     sync.Mutex
	counts map[string]int
}

// Option configures a Server.
type Option func(*Server)

// WithInterceptor installs a hook that runs before every handler, for fault
// injection in tests.
func WithInterceptor(i Interceptor) Option { return func(s *Server) { s.intercept = i } }

// WithLogger sets the logger; by default the server logs nothing.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.logger = l } }

// WithTimeout sets the deadline given to each handler's context, like a
// function's configured timeout (default 60 s).
func WithTimeout(d time.Duration) Option { return func(s *Server) { s.timeout = d } }

// WithAccount sets the region and account used in the ARNs the server reports
// (default us-east-1 and 000000000000).
func WithAccount(region, account string) Option {
	return func(s *Server) { s.region, s.account = region, account }
}

// NewServer serves functions, each a handler built with lambda.NewHandler.
func NewServer(functions map[string]lambda.Handler, opts ...Option) *Server {
	s := &Server{
		functions: make(map[string]lambda.Handler, len(functions)),
		logger:    slog.New(slog.DiscardHandler),
		region:    "us-east-1",
		account:   "000000000000",
		timeout:   60 * time.Second,
		counts:    make(map[string]int),
		mux:       http.NewServeMux(),
	}
	for name, h := range functions {
		s.functions[name] = h
	}
	for _, o := range opts {
		o(s)
	}
	s.mux.HandleFunc("POST "+InvokePath, s.invoke)
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// Invocations reports how many invocations reached function, counting those an
// interceptor failed.
func (s *Server) Invocations(function string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[function]
}

// Counts returns a copy of the invocation count of every function called so far.
func (s *Server) Counts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counts))
	for k, v := range s.counts {
		out[k] = v
	}
	return out
}

// Listen serves on addr ("" means 127.0.0.1:0, a port chosen by the OS) and
// returns the base URL to give an SDK client as its Lambda endpoint, and a
// function that stops the server.
func (s *Server) Listen(addr string) (url string, closeFn func() error, err error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("lambdaapi: listen on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.logger.Error("lambda api server stopped", "err", err)
		}
	}()
	closeFn = func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	}
	return "http://" + ln.Addr().String(), closeFn, nil
}

// FunctionName extracts NAME from a bare name, a partial ARN
// (ACCOUNT:function:NAME) or a full ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME),
// each optionally followed by :QUALIFIER, which is ignored.
func FunctionName(nameOrARN string) string {
	parts := strings.Split(nameOrARN, ":")
	for i, p := range parts {
		if p == "function" && i+1 < len(parts) {
			return parts[i+1]
		}
	}
	return parts[0]
}

func (s *Server) invoke(w http.ResponseWriter, r *http.Request) {
	name := FunctionName(r.PathValue("FunctionName"))
	arn := fmt.Sprintf("arn:aws:lambda:%s:%s:function:%s", s.region, s.account, name)
	if _, ok := s.functions[name]; !ok {
		writeAPIError(w, &APIError{Status: http.StatusNotFound, Type: "ResourceNotFoundException",
			Message: "Function not found: " + arn})
		return
	}
	payload, err := io.ReadAll(r.Body)
	if err != nil {
		writeAPIError(w, &APIError{Status: http.StatusBadRequest, Type: "InvalidRequestContentException",
			Message: "could not read request body: " + err.Error()})
		return
	}
	s.mu.Lock()
	s.counts[name]++
	s.mu.Unlock()

	requestID := newRequestID()
	w.Header().Set("X-Amzn-Requestid", requestID)
	w.Header().Set("X-Amz-Executed-Version", "$LATEST")

	switch r.Header.Get("X-Amz-Invocation-Type") {
	case "DryRun":
		w.WriteHeader(http.StatusNoContent)
		return
	case "Event":
		// Asynchronous invocation: accepted now, run detached from the request.
		go s.call(context.WithoutCancel(r.Context()), name, arn, requestID, payload)
		w.WriteHeader(http.StatusAccepted)
		return
	}
	out, invokeErr, apiErr := s.call(r.Context(), name, arn, requestID, payload)
	switch {
	case apiErr != nil:
		writeAPIError(w, apiErr)
	case invokeErr != nil:
		body, _ := json.Marshal(invokeErr)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Amz-Function-Error", "Unhandled")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(out)
	}
}

// call runs the interceptor and the handler. It returns the handler's output,
// or the function error as Lambda reports it, or an Invoke API error.
func (s *Server) call(ctx context.Context, name, arn, requestID string, payload []byte) ([]byte, *messages.InvokeResponse_Error, *APIError) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	ctx = lambdacontext.NewContext(ctx, &lambdacontext.LambdaContext{AwsRequestID: requestID, InvokedFunctionArn: arn})

	if s.intercept != nil {
		if err := s.intercept(ctx, name, payload); err != nil {
			if apiErr, ok := errors.AsType[*APIError](err); ok {
				s.logger.Info("invoke failed by interceptor", "function", name, "type", apiErr.Type)
				return nil, nil, apiErr
			}
			resp := errorResponse(err)
			s.logger.Info("invoke failed by interceptor", "function", name, "errorType", resp.Type)
			return nil, resp, nil
		}
	}
	out, resp := runHandler(ctx, s.functions[name], payload)
	if resp != nil {
		s.logger.Info("invoke returned error", "function", name, "errorType", resp.Type,
			"errorMessage", resp.Message, "duration", time.Since(start))
		return nil, resp, nil
	}
	s.logger.Debug("invoke succeeded", "function", name, "duration", time.Since(start))
	return out, nil, nil
}

// runHandler calls h, turning an error or a panic into the error payload the
// Lambda Go runtime would report for it.
func runHandler(ctx context.Context, h lambda.Handler, payload []byte) (out []byte, resp *messages.InvokeResponse_Error) {
	defer func() {
		if v := recover(); v != nil {
			resp = panicResponse(v)
		}
	}()
	out, err := h.Invoke(ctx, payload)
	if err != nil {
		return nil, errorResponse(err)
	}
	if len(bytes.TrimSpace(out)) == 0 {
		out = []byte("null")
	}
	return out, nil
}

// errorResponse follows aws-lambda-go's lambda/errors.go lambdaErrorResponse:
// errorType is the name of the error's dynamic type with any pointer removed
// (no package), so *planner.NoCapacityError is reported as NoCapacityError.
// An InvokeResponse_Error value is passed through unchanged.
func errorResponse(err error) *messages.InvokeResponse_Error {
	if ive, ok := err.(messages.InvokeResponse_Error); ok {
		return &ive
	}
	return &messages.InvokeResponse_Error{Message: err.Error(), Type: ErrorType(err)}
}

// panicResponse follows aws-lambda-go's lambdaPanicResponse: the type of the
// panic value and its %v text, with the stack.
func panicResponse(v any) *messages.InvokeResponse_Error {
	if ive, ok := v.(messages.InvokeResponse_Error); ok {
		return &ive
	}
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs) // runtime.Callers, panicResponse, the deferred func
	frames := runtime.CallersFrames(pcs[:n])
	var stack []*messages.InvokeResponse_Error_StackFrame
	for {
		f, more := frames.Next()
		stack = append(stack, &messages.InvokeResponse_Error_StackFrame{Path: f.File, Line: int32(f.Line), Label: f.Function})
		if !more {
			break
		}
	}
	return &messages.InvokeResponse_Error{Message: fmt.Sprintf("%v", v), Type: ErrorType(v), StackTrace: stack}
}

// ErrorType is the errorType Lambda reports for a value returned or panicked
// by a Go handler: the type's name without pointer or package.
func ErrorType(v any) string {
	t := reflect.TypeOf(v)
	if t == nil {
		return ""
	}
	if t.Kind() == reflect.Pointer {
		return t.Elem().Name()
	}
	return t.Name()
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// Func wraps a handler function (anything lambda.Start accepts) for a server that invokes it concurrently.
// lambda.NewHandler's Invoke returns bytes of a pooled buffer it has already handed back to its pool, which is
// harmless in the Lambda runtime (one invocation at a time per process) but lets two concurrent invocations here
// overwrite each other's output. A handler built per invocation has a pool of its own.
func Func(fn any) lambda.Handler { return freshHandler{fn} }

type freshHandler struct{ fn any }

func (f freshHandler) Invoke(ctx context.Context, payload []byte) ([]byte, error) {
	return lambda.NewHandler(f.fn).Invoke(ctx, payload)
}
