package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sfn"
	"github.com/spf13/pflag"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/workflow"
)

// The console's page: plain HTML, CSS and JavaScript, embedded in the binary (no toolchain, nothing fetched).
//
//go:embed console
var consoleFiles embed.FS

// consoleBackend is what the console reads and does: the local stack's control API, or the deployed stack on AWS,
// through the same code as list, history, deploy and stop.
type consoleBackend interface {
	executionSource
	deployments(ctx context.Context) ([]listedDeployment, error)
	executions(ctx context.Context) ([]consoleExecution, error)
	// deploy checks and plans a request as the deploy command does, then starts it; a bad request is a usageError.
	deploy(ctx context.Context, req events.DeployRequest) (string, error)
	stop(ctx context.Context, id string) (deployment.Stopped, error)
}

// consoleExecution is one row of the executions list.
type consoleExecution struct {
	ExecutionArn string    `json:"executionArn"`
	Name         string    `json:"name"`
	Status       string    `json:"status"`
	StartDate    time.Time `json:"startDate"`
	DeploymentID string    `json:"deploymentId,omitempty"`
}

// console serves the page and its JSON API. State-changing requests need the per-start token the page carries
// (X-Console-Token) and, when the browser sends one, an Origin of this server: another site open in the same
// browser can neither read the token nor forge the header.
type console struct {
	backend consoleBackend
	token   string
	asl     json.RawMessage
	poll    time.Duration
}

func newConsole(b consoleBackend) (*console, error) {
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	return &console{backend: b, token: hex.EncodeToString(tok), asl: workflow.Definition, poll: time.Second}, nil
}

// listenConsole serves the console on a loopback address (addr "" for a free port) until ctx ends.
func listenConsole(ctx context.Context, c *console, addr string) (string, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return "", fmt.Errorf("console address %q: the console listens on loopback only", addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shut)
	}()
	return "http://" + ln.Addr().String() + "/", nil
}

func (c *console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Content-Security-Policy", "default-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'")
	switch {
	case r.Method == http.MethodGet && (r.URL.Path == "/" || r.URL.Path == "/index.html"):
		c.page(w)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/static/"):
		sub, _ := fs.Sub(consoleFiles, "console")
		http.StripPrefix("/static/", http.FileServerFS(sub)).ServeHTTP(w, r)
	case r.Method == http.MethodGet && r.URL.Path == "/api/definition":
		writeJSONResponse(w, c.asl, nil)
	case r.Method == http.MethodGet && r.URL.Path == "/api/deployments":
		ds, err := c.backend.deployments(r.Context())
		writeJSONResponse(w, ds, err)
	case r.Method == http.MethodGet && r.URL.Path == "/api/executions":
		xs, err := c.backend.executions(r.Context())
		writeJSONResponse(w, xs, err)
	case r.Method == http.MethodGet && r.URL.Path == "/api/execution":
		v, err := c.execution(r.Context(), r.URL.Query().Get("arn"))
		writeJSONResponse(w, v, err)
	case r.Method == http.MethodGet && r.URL.Path == "/api/stream":
		c.stream(w, r)
	case r.Method == http.MethodPost && (r.URL.Path == "/api/deploy" || r.URL.Path == "/api/stop"):
		if !c.trusted(r) {
			http.Error(w, `{"error":"refused: this request did not come from the console's page"}`, http.StatusForbidden)
			return
		}
		c.act(w, r)
	default:
		http.Error(w, `{"error":"not found"}`, http.StatusNotFound)
	}
}

// trusted: the per-start token, and a same-origin (or no) Origin.
func (c *console) trusted(r *http.Request) bool {
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("X-Console-Token")), []byte(c.token)) != 1 {
		return false
	}
	origin := r.Header.Get("Origin")
	return origin == "" || origin == "http://"+r.Host
}

func (c *console) page(w http.ResponseWriter) {
	raw, err := consoleFiles.ReadFile("console/index.html")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write([]byte(strings.Replace(string(raw), "{{TOKEN}}", c.token, 1)))
}

func (c *console) execution(ctx context.Context, arn string) (any, error) {
	if arn == "" {
		return nil, usageError{"an execution ARN is needed"}
	}
	x, hist, err := c.backend.read(ctx, arn)
	if err != nil {
		return nil, err
	}
	return historyJSON(x, hist), nil
}

func (c *console) act(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 64<<10))
	if err != nil {
		writeJSONResponse(w, nil, usageError{err.Error()})
		return
	}
	if r.URL.Path == "/api/stop" {
		var in struct {
			DeploymentID string `json:"deploymentId"`
		}
		if err := json.Unmarshal(body, &in); err != nil || !events.ValidDeploymentID(in.DeploymentID) {
			writeJSONResponse(w, nil, usageError{fmt.Sprintf("%q is not a deployment id (3-36 of a-z, 0-9, -)", in.DeploymentID)})
			return
		}
		res, err := c.backend.stop(r.Context(), in.DeploymentID)
		writeJSONResponse(w, res, err)
		return
	}
	var req events.DeployRequest
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeJSONResponse(w, nil, usageError{"not a deploy request: " + err.Error()})
		return
	}
	arn, err := c.backend.deploy(r.Context(), req)
	writeJSONResponse(w, map[string]string{"executionArn": arn}, err)
}

// stream sends the deployments, or one execution, as server-sent events: at once, then whenever they change.
func (c *console) stream(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		http.Error(w, "streaming unsupported", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	arn := r.URL.Query().Get("arn")
	var last []byte
	tick := time.NewTicker(c.poll)
	defer tick.Stop()
	for {
		var v any
		var err error
		if arn != "" {
			v, err = c.execution(r.Context(), arn)
		} else {
			var ds []listedDeployment
			var xs []consoleExecution
			if ds, err = c.backend.deployments(r.Context()); err == nil {
				xs, err = c.backend.executions(r.Context())
			}
			v = map[string]any{"deployments": ds, "executions": xs}
		}
		if err != nil {
			v = map[string]string{"streamError": err.Error()} // not "error": an execution has one of its own
		}
		raw, _ := json.Marshal(v)
		if string(raw) != string(last) {
			if _, err := fmt.Fprintf(w, "data: %s\n\n", raw); err != nil {
				return
			}
			flusher.Flush()
			last = raw
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

// writeJSONResponse answers v, or the error: 400 for a usage error (a bad request), 500 otherwise.
func writeJSONResponse(w http.ResponseWriter, v any, err error) {
	w.Header().Set("Content-Type", "application/json")
	if err != nil {
		code := http.StatusInternalServerError
		var u usageError
		if errors.As(err, &u) {
			code = http.StatusBadRequest
		}
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
		return
	}
	if raw, ok := v.(json.RawMessage); ok {
		_, _ = w.Write(raw)
		return
	}
	_ = json.NewEncoder(w).Encode(v)
}

// localConsole is the console's backend on the local stack: its control API, as the local commands use it.
type localConsole struct{ ls localStack }

func (l localConsole) read(ctx context.Context, arn string) (execution, []deployment.HistoryEvent, error) {
	return localEngine{l.ls}.read(ctx, arn)
}

func (l localConsole) deployments(ctx context.Context) ([]listedDeployment, error) {
	var ds []listedDeployment
	err := l.ls.Do(ctx, http.MethodGet, "/deployments", nil, &ds)
	return ds, err
}

func (l localConsole) executions(ctx context.Context) ([]consoleExecution, error) {
	var started []struct {
		ExecutionArn string
		DeploymentID string
		At           time.Time
	}
	if err := l.ls.Do(ctx, http.MethodGet, "/executions", nil, &started); err != nil {
		return nil, err
	}
	out := []consoleExecution{}
	seen := map[string]bool{}
	for i := len(started) - 1; i >= 0 && len(out) < 50; i-- {
		st := started[i]
		if seen[st.ExecutionArn] {
			continue
		}
		seen[st.ExecutionArn] = true
		x, _, err := l.read(ctx, st.ExecutionArn)
		if err != nil {
			return nil, err
		}
		out = append(out, consoleExecution{ExecutionArn: st.ExecutionArn, Name: x.Name, Status: x.Status, StartDate: x.StartDate,
			DeploymentID: st.DeploymentID})
	}
	return out, nil
}

func (l localConsole) deploy(ctx context.Context, req events.DeployRequest) (string, error) {
	t, err := localTarget(ctx, l.ls)
	if err != nil {
		return "", err
	}
	d := &deployFlags{req: req, requester: req.Requester}
	checked, _, err := d.request(ctx, req.Model, t)
	if err != nil {
		return "", err
	}
	var started struct{ ExecutionArn string }
	if err := l.ls.Do(ctx, http.MethodPost, "/deploy", checked, &started); err != nil {
		return "", err
	}
	return started.ExecutionArn, nil
}

func (l localConsole) stop(ctx context.Context, id string) (deployment.Stopped, error) {
	var res deployment.Stopped
	err := l.ls.Do(ctx, http.MethodPost, "/stop", events.StopRequest{DeploymentID: id}, &res)
	return res, err
}

// awsConsole is the console's backend on the deployed stack: the same calls as list, history, deploy and stop.
type awsConsole struct{ c *cloud }

func (a awsConsole) read(ctx context.Context, arn string) (execution, []deployment.HistoryEvent, error) {
	return stepFunctions{a.c.SFN}.read(ctx, arn)
}

func (a awsConsole) deployments(ctx context.Context) ([]listedDeployment, error) {
	o := a.c.Outputs
	ds, err := listDeployments(ctx, a.c.ECS, a.c.Scheduler, o[outCluster], o[outScheduleGroup], "", time.Now(), true, a.c.usage())
	if err != nil {
		return nil, err
	}
	recs, err := a.c.router().SleepRecords(ctx)
	if err != nil {
		return nil, err
	}
	return withEndpoints(withSleeping(ds, recs), o[outEndpointBase]), nil
}

func (a awsConsole) executions(ctx context.Context) ([]consoleExecution, error) {
	out, err := a.c.SFN.ListExecutions(ctx, &sfn.ListExecutionsInput{StateMachineArn: aws.String(a.c.Outputs[outStateMachine]), MaxResults: 50})
	if err != nil {
		return nil, awsErr("states:ListExecutions", err)
	}
	xs := []consoleExecution{}
	for _, x := range out.Executions {
		xs = append(xs, consoleExecution{ExecutionArn: aws.ToString(x.ExecutionArn), Name: aws.ToString(x.Name), Status: string(x.Status),
			StartDate: aws.ToTime(x.StartDate)})
	}
	return xs, nil
}

func (a awsConsole) deploy(ctx context.Context, req events.DeployRequest) (string, error) {
	d := &deployFlags{req: req, requester: req.Requester}
	checked, _, err := d.request(ctx, req.Model, a.c.target())
	if err != nil {
		return "", err
	}
	res, err := deployer{SFN: a.c.SFN, StateMachine: a.c.Outputs[outStateMachine], Now: time.Now}.start(ctx, checked)
	return res.ExecutionArn, err
}

func (a awsConsole) stop(ctx context.Context, id string) (deployment.Stopped, error) {
	return a.c.stopper().StopDeployment(ctx, id, "ollama-ecs console", deployment.Sleep)
}

func defineConsole(fs *pflag.FlagSet) runner {
	addr := fs.String("addr", "127.0.0.1:8470", "the loopback address to serve on (host:port)")
	af := addAWSFlags(fs)
	return func(ctx context.Context, _ []string, stdout, stderr io.Writer) error {
		c, err := connect(ctx, af, outStateMachine, outCluster, outScheduleGroup, outGPUTypes, outListener, outLBName, outKeyPrefix,
			outEndpointBase, outWakerTargetGroup)
		if err != nil {
			return err
		}
		con, err := newConsole(awsConsole{c})
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		url, err := listenConsole(ctx, con, *addr)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "console: %s (stack %s in %s; Ctrl-C stops it)\n", url, af.stack, c.Region)
		<-ctx.Done()
		return nil
	}
}
