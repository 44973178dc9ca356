package cloud

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
)

// Stage is a point in a task's start where a fault can crash it.
type Stage string

const (
	// StagePending is before the container starts: a crash here is a task that fails to start.
	StagePending Stage = "PENDING"
	// StageStarted is just after the server answers and the task became RUNNING.
	StageStarted Stage = "STARTED"
	// StageFetching is while the model is pulled or copied from the bucket.
	StageFetching Stage = "FETCHING"
	// StageLoading is as the model starts loading into memory.
	StageLoading Stage = "LOADING"
	// StageLoaded is once the model is loaded.
	StageLoaded Stage = "LOADED"
)

// Container is what a Runner needs to start a task's Ollama container.
type Container struct {
	TaskArn string
	// Env is the ollama container's environment overrides; FetchEnv the fetch container's.
	Env, FetchEnv map[string]string
	// GPUIDs are the GPUs reserved for the task (none on Fargate).
	GPUIDs []string
	// Stage is called as the container reaches each stage; when it answers true the runner must crash the
	// container there (kill its process), as fault injection asks. Never nil.
	Stage func(Stage) (crash bool)
}

// Runner starts a task's container. Start returns once the container serves (the task then becomes RUNNING) and
// does the rest (getting and loading the model) in the background, as the container would; ctx is cancelled if
// the task is stopped while starting. Unit tests of placement use a trivial Runner; OllamaRunner is the real one.
type Runner interface {
	Start(ctx context.Context, c Container) (Process, error)
}

// Process is a running container.
type Process interface {
	// Endpoint is the base URL of the container's Ollama API, http://127.0.0.1:PORT.
	Endpoint() string
	// PID is the operating system process id (0 for a process that is not a real one).
	PID() int
	// Exited is closed once the container has exited, for whatever reason.
	Exited() <-chan struct{}
	// ExitCode and Reason describe the exit once Exited is closed: 1 and the error when getting or loading the
	// model failed, 128+signal when a signal ended it (137 for a crash, 143 when stopped).
	ExitCode() int
	Reason() string
	// Stop ends the container (SIGTERM, then SIGKILL) and releases everything it holds; safe to call after an
	// exit and more than once. After it returns Exited is closed.
	Stop(ctx context.Context) error
	// Kill ends the container at once, as a crash would.
	Kill()
}

// OllamaRunner runs each task as a real `ollama serve` and then gets its model the way the container's start
// script does, from OLLAMA_ECS_SOURCE:
//
//   - ollama://NAME pulls NAME (offline this fails at once with a clear error: the server may not reach a
//     registry, see ollama.Options.AllowRegistry);
//   - s3://BUCKET/KEY.gguf copies the object from Objects and creates the model OLLAMA_ECS_MODEL from it (the
//     validate step has already resolved a Modelfile upload to the GGUF or catalog model its FROM names).
//
// It then loads the model with keep-alive forever, so /api/ps lists it. A failure to get or load the model makes
// the container exit with code 1 and the error as its reason, which is what the task's stop reason shows.
type OllamaRunner struct {
	// Binary is the ollama executable; empty means ollama.FindBinary.
	Binary string
	// TempDir holds the servers' folders; empty means os.TempDir().
	TempDir string
	// Objects is where s3:// sources are read from, normally the local Bucket.
	Objects deployment.ObjectReader
	// ReadyTimeout bounds the server's start; ModelTimeout bounds getting and loading the model (default 10 min).
	ReadyTimeout, ModelTimeout time.Duration
	Log                        *slog.Logger
}

// Start starts `ollama serve` with the container's environment and gets the model in the background.
func (r *OllamaRunner) Start(ctx context.Context, c Container) (Process, error) {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	var env []string
	for k, v := range c.Env {
		switch k {
		case "OLLAMA_HOST", "OLLAMA_MODELS", "HOME":
			continue // the server's own address and folders are the runner's to choose
		}
		env = append(env, k+"="+v)
	}
	srv, err := ollama.Start(ctx, ollama.Options{
		Binary: r.Binary, TempDir: r.TempDir, ReadyTimeout: r.ReadyTimeout, Env: env,
		Logger: log.With("task", c.TaskArn),
	})
	if err != nil {
		return nil, err
	}
	timeout := r.ModelTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	modelCtx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &ollamaProcess{srv: srv, exited: make(chan struct{}), cancel: cancel, modelDone: make(chan struct{})}
	go p.watch()
	go func() {
		defer close(p.modelDone)
		defer cancel()
		err := r.getModel(modelCtx, srv, c)
		exitGrace := time.Duration(0)
		if err != nil {
			// A killed server fails the model step (connection refused) a moment before its exit is reaped:
			// give the exit that moment, so a crash reports the signal, not a model failure.
			exitGrace = 500 * time.Millisecond
		}
		select {
		case <-srv.Exited():
			return // crashed or stopped: the server's own exit code tells
		case <-time.After(exitGrace):
		}
		// A cancelled context means Stop was called: that exit is the stop's, not a model failure.
		if err != nil && !errors.Is(modelCtx.Err(), context.Canceled) {
			log.Warn("model failed; the container exits", "task", c.TaskArn, "error", err)
			p.fail(1, err.Error())
			stopCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
			defer stop()
			_ = srv.Stop(stopCtx)
		}
	}()
	return p, nil
}

// getModel is the container's start script: get the model from its source, then load it.
func (r *OllamaRunner) getModel(ctx context.Context, srv *ollama.Server, c Container) error {
	src := c.Env[deployment.EnvSource]
	if src == "" {
		src = c.FetchEnv[deployment.EnvSource]
	}
	name := c.Env[deployment.EnvModel]
	client := srv.Client()
	crashAt := func(s Stage) bool {
		if c.Stage(s) {
			srv.Kill()
			return true
		}
		return false
	}
	if crashAt(StageFetching) {
		return nil
	}
	switch {
	case strings.HasPrefix(src, "ollama://"):
		from := strings.TrimPrefix(src, "ollama://")
		if name == "" {
			name = from
		}
		if err := pullAs(ctx, client, from, name); err != nil {
			return err
		}
	case strings.HasPrefix(src, "s3://"):
		bucket, key, _ := strings.Cut(strings.TrimPrefix(src, "s3://"), "/")
		if bucket == "" || key == "" {
			return fmt.Errorf("%s=%q: want s3://BUCKET/KEY", deployment.EnvSource, src)
		}
		if name == "" {
			return fmt.Errorf("%s is required with an s3:// source", deployment.EnvModel)
		}
		if err := r.fromBucket(ctx, srv, bucket, key, name); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%s=%q: want ollama://NAME or s3://BUCKET/KEY", deployment.EnvSource, src)
	}
	if crashAt(StageLoading) {
		return nil
	}
	if err := ollama.Load(ctx, client, name); err != nil {
		return err
	}
	crashAt(StageLoaded)
	return nil
}

func (r *OllamaRunner) fromBucket(ctx context.Context, srv *ollama.Server, bucket, key, name string) error {
	if r.Objects == nil {
		return fmt.Errorf("s3://%s/%s: the runner has no bucket to read from", bucket, key)
	}
	dir := filepath.Join(srv.Dir(), "fetch")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	file := filepath.Join(dir, "model.gguf")
	if err := r.download(ctx, bucket, key, file); err != nil {
		return err
	}
	defer os.Remove(file)
	return ollama.CreateFromGGUF(ctx, srv.Client(), name, file)
}

func (r *OllamaRunner) download(ctx context.Context, bucket, key, file string) error {
	out, err := r.Objects.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("fetch s3://%s/%s: %w", bucket, key, err)
	}
	defer out.Body.Close()
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, out.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetch s3://%s/%s: %w", bucket, key, err)
	}
	return f.Close()
}

// pullAs pulls from and, when the deployment names the model differently, copies it to name.
func pullAs(ctx context.Context, client *api.Client, from, name string) error {
	pull := ollama.Pull
	if host, _, ok := strings.Cut(from, "/"); ok && registry.Loopback(host) {
		pull = ollama.PullInsecure // the local registry speaks plain HTTP
	}
	if err := pull(ctx, client, from); err != nil {
		return err
	}
	if name == "" || name == from {
		return nil
	}
	return client.Copy(ctx, &api.CopyRequest{Source: from, Destination: name})
}

// ollamaProcess is an `ollama serve` whose exit code and reason may be the model step's rather than the server's.
type ollamaProcess struct {
	srv       *ollama.Server
	exited    chan struct{}
	cancel    context.CancelFunc
	modelDone chan struct{}

	mu       sync.Mutex
	code     int
	reason   string
	failed   bool // code and reason were set by fail
	stopping bool
}

func (p *ollamaProcess) Endpoint() string        { return p.srv.URL().String() }
func (p *ollamaProcess) PID() int                { return p.srv.PID() }
func (p *ollamaProcess) Exited() <-chan struct{} { return p.exited }
func (p *ollamaProcess) Kill()                   { p.srv.Kill() }

func (p *ollamaProcess) ExitCode() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.code
}

func (p *ollamaProcess) Reason() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

func (p *ollamaProcess) fail(code int, reason string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.failed && !p.stopping {
		p.code, p.reason, p.failed = code, reason, true
	}
}

// watch publishes the exit. A server that exits cleanly on our SIGTERM reports 143, as the container's start
// script (a shell that exits 128+signal) makes ECS show for a stopped task.
func (p *ollamaProcess) watch() {
	<-p.srv.Exited()
	p.mu.Lock()
	if !p.failed {
		p.code = p.srv.ExitCode()
		if p.stopping && p.code == 0 {
			p.code = 143
		}
		if p.code > 128 && !p.stopping {
			p.reason = fmt.Sprintf("ollama serve killed by signal %d", p.code-128)
		}
	}
	p.mu.Unlock()
	close(p.exited)
}

func (p *ollamaProcess) Stop(ctx context.Context) error {
	p.mu.Lock()
	select {
	case <-p.exited:
	default:
		p.stopping = true
	}
	p.mu.Unlock()
	p.cancel()
	err := p.srv.Stop(ctx)
	<-p.modelDone
	<-p.exited
	return err
}
