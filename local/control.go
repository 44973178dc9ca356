package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	ecstypes "github.com/aws/aws-sdk-go-v2/service/ecs/types"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local/cachedir"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
)

// The control API lets `ollama-ecs local ...` commands drive a stack that `ollama-ecs local up` keeps running. It
// listens on loopback only and speaks JSON.

// maxUploadBytes bounds one upload through the control API.
const maxUploadBytes = 8 << 30

// Handler serves the control API:
//
//	POST /deploy        DeployRequest → {"executionArn"}  (StartExecution, name = deployment id)
//	POST /events        an EventBridge event → Routed      (the stack's rules)
//	PUT  /objects/<key> the body, streamed → {"key"}       (an upload; the S3 rule may start a deployment)
//	GET  /executions    → []Started;  GET /executions/<arn>[?wait=1] → engine.Execution
//	GET  /tasks         → []ecstypes.Task (with tags)      POST /stop {"deploymentId"} → deployment.Stopped
//	GET  /gpu-types     → the GPU instance types the cluster can run
//	GET  /gpu-spot-types → the GPU types with Spot capacity
//	GET  /registry      → the model registry's host (models the catalog does not list resolve there)
func (s *Stack) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /deploy", func(w http.ResponseWriter, r *http.Request) {
		var req events.DeployRequest
		if err := decode(r, &req); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		arn, err := s.Deploy(r.Context(), req)
		reply(w, map[string]string{"executionArn": arn}, err)
	})
	mux.HandleFunc("POST /events", func(w http.ResponseWriter, r *http.Request) {
		raw, err := io.ReadAll(io.LimitReader(r.Body, events.MaxEventBytes+1))
		if err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		routed, err := s.PutEvent(r.Context(), raw)
		reply(w, routed, err)
	})
	mux.HandleFunc("PUT /objects/{key...}", func(w http.ResponseWriter, r *http.Request) {
		// Streamed to the bucket's file; past the limit the upload fails whole (413), nothing is stored.
		key := r.PathValue("key")
		err := s.Upload(r.Context(), key, http.MaxBytesReader(w, r.Body, maxUploadBytes))
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			fail(w, http.StatusRequestEntityTooLarge, fmt.Errorf("%s: the upload is larger than %d bytes", key, tooLarge.Limit))
			return
		}
		reply(w, map[string]string{"key": key}, err)
	})
	mux.HandleFunc("GET /executions", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Executions(), nil)
	})
	mux.HandleFunc("GET /executions/{arn...}", func(w http.ResponseWriter, r *http.Request) {
		arn := r.PathValue("arn")
		var ex engine.Execution
		var err error
		if r.URL.Query().Get("wait") != "" {
			ex, err = s.Engine.Wait(r.Context(), arn)
		} else {
			ex, err = s.Engine.Describe(r.Context(), arn)
		}
		reply(w, ex, err)
	})
	mux.HandleFunc("GET /gpu-types", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.GPUInstanceTypes(), nil)
	})
	mux.HandleFunc("GET /gpu-spot-types", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.SpotInstanceTypes(), nil)
	})
	mux.HandleFunc("GET /registry", func(w http.ResponseWriter, r *http.Request) {
		reply(w, s.Registry.Host, nil)
	})
	mux.HandleFunc("GET /tasks", func(w http.ResponseWriter, r *http.Request) {
		tasks, err := s.Tasks(r.Context())
		reply(w, tasks, err)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, r *http.Request) {
		var req events.StopRequest
		if err := decode(r, &req); err != nil {
			fail(w, http.StatusBadRequest, err)
			return
		}
		raw, _ := json.Marshal(map[string]any{"deploymentId": req.DeploymentID, "forget": req.Forget})
		stopped, err := s.Teardown.Handle(r.Context(), raw)
		reply(w, stopped, err)
	})
	mux.HandleFunc("POST /wake/{id}", func(w http.ResponseWriter, r *http.Request) {
		res, err := s.Wake(r.Context(), r.PathValue("id"))
		reply(w, res, err)
	})
	mux.HandleFunc("GET /sleeping", func(w http.ResponseWriter, r *http.Request) {
		recs, err := s.Sleeping(r.Context())
		reply(w, recs, err)
	})
	return mux
}

// Wake starts a sleeping deployment as a request to its endpoint would.
func (s *Stack) Wake(ctx context.Context, id string) (deployment.WakeResult, error) {
	return s.waker.Wake(ctx, id)
}

// Sleeping lists the sleep records (asleep or woken) of the stack's deployments.
func (s *Stack) Sleeping(ctx context.Context) ([]deployment.SleepRecord, error) {
	return s.waker.Router.SleepRecords(ctx)
}

// Tasks lists the cluster's running tasks with their tags: the deployments.
func (s *Stack) Tasks(ctx context.Context) ([]ecstypes.Task, error) {
	cluster := aws.String(s.ECS.Config().Name)
	list, err := s.ECS.ListTasks(ctx, &ecs.ListTasksInput{Cluster: cluster})
	if err != nil || len(list.TaskArns) == 0 {
		return []ecstypes.Task{}, err
	}
	out, err := s.ECS.DescribeTasks(ctx, &ecs.DescribeTasksInput{Cluster: cluster, Tasks: list.TaskArns,
		Include: []ecstypes.TaskField{ecstypes.TaskFieldTags}})
	if err != nil {
		return nil, err
	}
	return out.Tasks, nil
}

func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, events.MaxEventBytes))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		fail(w, http.StatusUnprocessableEntity, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}

// Pointer is the file `local up` writes so other commands find the running stack.
type Pointer struct {
	URL       string    `json:"url"`
	PID       int       `json:"pid"`
	StartedAt time.Time `json:"startedAt"`
}

// PointerPath is where the pointer file lives: $OLLAMA_ECS_LOCAL, else local/stack.json in the cache folder.
func PointerPath() (string, error) {
	if p := os.Getenv("OLLAMA_ECS_LOCAL"); p != "" {
		return p, nil
	}
	dir, err := cachedir.Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "local", "stack.json"), nil
}

// Serve serves a control API handler (normally Handler, maybe extended) on a loopback port and writes the pointer
// file; both go away when ctx ends.
func Serve(ctx context.Context, handler http.Handler, pointerPath string) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	url := "http://" + l.Addr().String()
	if err := os.MkdirAll(filepath.Dir(pointerPath), 0o755); err != nil {
		l.Close()
		return "", err
	}
	raw, _ := json.Marshal(Pointer{URL: url, PID: os.Getpid(), StartedAt: time.Now().UTC()})
	if err := os.WriteFile(pointerPath, raw, 0o644); err != nil {
		l.Close()
		return "", err
	}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		_ = os.Remove(pointerPath)
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return url, nil
}

// Client talks to a running stack's control API.
type Client struct {
	URL  string
	HTTP *http.Client
}

// Connect finds a running stack from its pointer file; ok is false when none runs.
func Connect(pointerPath string) (*Client, bool) {
	raw, err := os.ReadFile(pointerPath)
	if err != nil {
		return nil, false
	}
	var p Pointer
	if json.Unmarshal(raw, &p) != nil || !strings.HasPrefix(p.URL, "http://127.0.0.1:") {
		return nil, false
	}
	c := &Client{URL: p.URL, HTTP: &http.Client{}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Do(ctx, http.MethodGet, "/executions", nil, nil); err != nil {
		return nil, false
	}
	return c, true
}

// Do sends one request; body may be nil, []byte (sent as is) or a value sent as JSON; out receives the answer.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = strings.NewReader(string(b))
	case io.Reader:
		rd = b // streamed (an upload)
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(raw))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.URL+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("local stack at %s: %w", c.URL, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var e struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return errors.New(e.Error)
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
