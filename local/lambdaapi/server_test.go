package lambdaapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"

	"github.com/ollama-ecs/ollama-ecs/local/lambdaapi"
)

// NoCapacityError stands for the project's typed handler errors.
type NoCapacityError struct{ InstanceType string }

func (e *NoCapacityError) Error() string { return "no capacity for " + e.InstanceType }

// quotaError is a value (not pointer) error type.
type quotaError struct{}

func (quotaError) Error() string { return "quota exceeded" }

type echoIn struct {
	Fail  string `json:"fail"`
	Value int    `json:"value"`
}

type echoOut struct {
	Value     int    `json:"value"`
	RequestID string `json:"requestId"`
	ARN       string `json:"arn"`
}

func echo(ctx context.Context, in echoIn) (echoOut, error) {
	switch in.Fail {
	case "nocap":
		return echoOut{}, &NoCapacityError{InstanceType: "g4dn.xlarge"}
	case "value":
		return echoOut{}, quotaError{}
	case "plain":
		return echoOut{}, errors.New("plain failure")
	case "wrapped":
		return echoOut{}, fmt.Errorf("describing tasks: %w", &NoCapacityError{InstanceType: "p3.2xlarge"})
	case "panic":
		panic("handler exploded")
	}
	lc, _ := lambdacontext.FromContext(ctx)
	if _, ok := ctx.Deadline(); !ok {
		return echoOut{}, errors.New("handler context has no deadline")
	}
	return echoOut{Value: in.Value * 2, RequestID: lc.AwsRequestID, ARN: lc.InvokedFunctionArn}, nil
}

func newTestServer(t *testing.T, opts ...lambdaapi.Option) (*lambdaapi.Server, string) {
	t.Helper()
	s := lambdaapi.NewServer(map[string]lambda.Handler{"Echo": lambda.NewHandler(echo)}, opts...)
	ts := httptest.NewServer(s)
	t.Cleanup(ts.Close)
	return s, ts.URL
}

type answer struct {
	status        int
	functionError string
	errorType     string // X-Amzn-Errortype
	body          []byte
}

func invoke(t *testing.T, base, function, payload string, header ...string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost,
		base+"/2015-03-31/functions/"+url.PathEscape(function)+"/invocations", strings.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{res.StatusCode, res.Header.Get("X-Amz-Function-Error"), res.Header.Get("X-Amzn-Errortype"), body}
}

// runtimeError is what the real Lambda Go runtime reports for the same
// payload: it drives aws-lambda-go's own RPC entry point, which formats errors
// and panics with lambda/errors.go.
func runtimeError(t *testing.T, payload string) *messages.InvokeResponse_Error {
	t.Helper()
	var res messages.InvokeResponse
	fn := lambda.NewFunction(lambda.NewHandler(echo))
	req := &messages.InvokeRequest{Payload: []byte(payload), Deadline: messages.InvokeRequest_Timestamp{Seconds: time.Now().Add(time.Minute).Unix()}}
	if err := fn.Invoke(req, &res); err != nil {
		t.Fatal(err)
	}
	return res.Error
}

func TestFunctionErrorsMatchTheLambdaRuntime(t *testing.T) {
	_, base := newTestServer(t)
	for _, tc := range []struct {
		fail, wantType string
	}{
		{"nocap", "NoCapacityError"},
		{"value", "quotaError"},
		{"plain", "errorString"},
		{"wrapped", "wrapError"}, // why handlers must return typed errors unwrapped
		{"panic", "string"},
	} {
		t.Run(tc.fail, func(t *testing.T) {
			payload := `{"fail":"` + tc.fail + `"}`
			a := invoke(t, base, "Echo", payload)
			if a.status != http.StatusOK || a.functionError != "Unhandled" {
				t.Fatalf("status %d, X-Amz-Function-Error %q; want 200, Unhandled", a.status, a.functionError)
			}
			var got messages.InvokeResponse_Error
			if err := json.Unmarshal(a.body, &got); err != nil {
				t.Fatalf("body %s: %v", a.body, err)
			}
			want := runtimeError(t, payload)
			if want == nil {
				t.Fatal("the aws-lambda-go runtime reported no error")
			}
			if got.Type != tc.wantType || got.Type != want.Type || got.Message != want.Message {
				t.Errorf("got errorType %q message %q; runtime says %q %q; want type %q",
					got.Type, got.Message, want.Type, want.Message, tc.wantType)
			}
		})
	}
}

func TestFunctionNameForms(t *testing.T) {
	s, base := newTestServer(t)
	for _, name := range []string{
		"Echo",
		"000000000000:function:Echo",
		"arn:aws:lambda:us-east-1:000000000000:function:Echo",
		"arn:aws:lambda:us-east-1:000000000000:function:Echo:$LATEST",
	} {
		a := invoke(t, base, name, `{"value":21}`)
		var out echoOut
		if err := json.Unmarshal(a.body, &out); err != nil || a.status != http.StatusOK {
			t.Fatalf("%s: status %d body %s", name, a.status, a.body)
		}
		if out.Value != 42 || out.RequestID == "" || out.ARN != "arn:aws:lambda:us-east-1:000000000000:function:Echo" {
			t.Errorf("%s: got %+v", name, out)
		}
	}
	if got := s.Invocations("Echo"); got != 4 {
		t.Errorf("Invocations(Echo) = %d, want 4", got)
	}
}

func TestUnknownFunctionIsResourceNotFound(t *testing.T) {
	s, base := newTestServer(t)
	a := invoke(t, base, "arn:aws:lambda:us-east-1:000000000000:function:Nope", `{}`)
	if a.status != http.StatusNotFound || a.errorType != "ResourceNotFoundException" ||
		!strings.Contains(string(a.body), "Function not found: arn:aws:lambda:us-east-1:000000000000:function:Nope") {
		t.Errorf("got %d %q %s", a.status, a.errorType, a.body)
	}
	if len(s.Counts()) != 0 {
		t.Errorf("unknown function was counted: %v", s.Counts())
	}
}

func TestInterceptorInjectsFaults(t *testing.T) {
	calls := 0
	s, base := newTestServer(t, lambdaapi.WithInterceptor(func(_ context.Context, fn string, payload []byte) error {
		calls++
		switch calls {
		case 1:
			return lambdaapi.ServiceException("injected")
		case 2:
			return lambdaapi.TooManyRequests("slow down")
		case 3:
			return &NoCapacityError{InstanceType: "injected"}
		}
		return nil
	}))
	for _, want := range []struct {
		status                   int
		errorType, functionError string
	}{
		{http.StatusInternalServerError, "ServiceException", ""},
		{http.StatusTooManyRequests, "TooManyRequestsException", ""},
		{http.StatusOK, "", "Unhandled"},
		{http.StatusOK, "", ""},
	} {
		a := invoke(t, base, "Echo", `{"value":1}`)
		if a.status != want.status || a.errorType != want.errorType || a.functionError != want.functionError {
			t.Errorf("got %d %q %q (%s); want %d %q %q", a.status, a.errorType, a.functionError, a.body,
				want.status, want.errorType, want.functionError)
		}
	}
	if got := s.Invocations("Echo"); got != 4 {
		t.Errorf("Invocations(Echo) = %d, want 4 (faults count too)", got)
	}
}

func TestAsyncAndDryRunInvocations(t *testing.T) {
	done := make(chan struct{})
	s := lambdaapi.NewServer(map[string]lambda.Handler{"Bg": lambda.NewHandler(func() error { close(done); return nil })})
	ts := httptest.NewServer(s)
	defer ts.Close()
	if a := invoke(t, ts.URL, "Bg", `{}`, "X-Amz-Invocation-Type", "DryRun"); a.status != http.StatusNoContent {
		t.Errorf("DryRun: status %d", a.status)
	}
	if a := invoke(t, ts.URL, "Bg", `{}`, "X-Amz-Invocation-Type", "Event"); a.status != http.StatusAccepted {
		t.Errorf("Event: status %d", a.status)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("asynchronous invocation never ran the handler")
	}
}

func TestListenServesOnLoopback(t *testing.T) {
	s := lambdaapi.NewServer(map[string]lambda.Handler{"Echo": lambda.NewHandler(echo)})
	u, closeFn, err := s.Listen("")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(u, "http://127.0.0.1:") {
		t.Errorf("url %q is not on 127.0.0.1", u)
	}
	if a := invoke(t, u, "Echo", `{"value":2}`); a.status != http.StatusOK || !strings.Contains(string(a.body), `"value":4`) {
		t.Errorf("got %d %s", a.status, a.body)
	}
	if err := closeFn(); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Post(u+"/2015-03-31/functions/Echo/invocations", "application/json", strings.NewReader("{}")); err == nil {
		t.Error("server still answers after close")
	}
}

func TestErrorType(t *testing.T) {
	for _, tc := range []struct {
		v    any
		want string
	}{
		{&NoCapacityError{}, "NoCapacityError"},
		{quotaError{}, "quotaError"},
		{errors.New("x"), "errorString"},
		{nil, ""},
	} {
		if got := lambdaapi.ErrorType(tc.v); got != tc.want {
			t.Errorf("ErrorType(%T) = %q, want %q", tc.v, got, tc.want)
		}
	}
}
