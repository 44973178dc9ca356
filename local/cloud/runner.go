package cloud

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry/bake"
	"github.com/ollama-ecs/ollama-ecs/container"
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
	// Image is the image to run, from the task definition's ollama container; "" runs no image layers.
	Image string
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

// OllamaRunner runs each task's container the way ECS does, with the real parts: it unpacks the task's image
// (Container.Image, from a local registry) into the task's own folder, emulates the fetch init container for an
// s3:// source (copies the object from Objects, as the fetch script would), and runs the container's real entry
// script (container.OllamaEntry) under /bin/sh with the real ollama binary. The script starts `ollama serve`,
// gets the model from OLLAMA_ECS_SOURCE unless the image already holds it, and loads it with keep-alive forever.
//
// Locally an image supplies its layers and its OLLAMA_MODELS (rebased into the task's folder); the ollama binary
// is the host's (Binary) and the rest of the image's environment is not used. An image with no OLLAMA_MODELS keeps
// its models in the task's folder, as a container keeps them in /root/.ollama. A script failure makes the task
// exit with the script's status and its last message as the reason, which is what the task's stop reason shows.
type OllamaRunner struct {
	// Binary is the ollama executable; empty means ollama.FindBinary.
	Binary string
	// TempDir holds the tasks' folders; empty means os.TempDir(). LayerDir holds unpacked image layers, each
	// once by digest (tasks link to them); empty means TempDir/layers.
	TempDir, LayerDir string
	// Objects is where s3:// sources are read from, normally the local Bucket.
	Objects deployment.ObjectReader
	// ReadyTimeout bounds the server's start.
	ReadyTimeout time.Duration
	Log          *slog.Logger
}

// Start unpacks the image, fetches an s3:// source, and runs the entry script; it returns once the server
// answers, and the script gets and loads the model in the background.
func (r *OllamaRunner) Start(ctx context.Context, c Container) (Process, error) {
	log := r.Log
	if log == nil {
		log = slog.Default()
	}
	bin := r.Binary
	if bin == "" {
		var err error
		if bin, err = ollama.FindBinary(); err != nil {
			return nil, err
		}
	}
	dir, err := os.MkdirTemp(r.TempDir, "task-")
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started {
			os.RemoveAll(dir)
		}
	}()
	modelsDir, err := r.unpack(ctx, c.Image, filepath.Join(dir, "rootfs"))
	if err != nil {
		return nil, fmt.Errorf("CannotPullContainerError: %s: %w", c.Image, err)
	}
	sourceDir := filepath.Join(dir, "models-source")
	stages, err := newStageHooks(dir, bin)
	if err != nil {
		return nil, err
	}
	if src := c.Env[deployment.EnvSource]; strings.HasPrefix(src, "s3://") {
		// The fetch init container runs first: a crash or failure there ends the task before its server starts.
		stages.fetched()
		if c.Stage(StageFetching) {
			stages.close()
			started = true
			return exited(dir, 137, "ollama serve killed by signal 9"), nil
		}
		if err := r.fetch(ctx, src, sourceDir); err != nil {
			stages.close()
			started = true
			return exited(dir, 1, err.Error()), nil
		}
	}
	env := []string{"PATH=" + stages.bin + ":" + os.Getenv("PATH"), "OLLAMA_ECS_SOURCE_DIR=" + sourceDir}
	if modelsDir != "" {
		env = append(env, "OLLAMA_MODELS="+modelsDir)
	}
	for k, v := range c.Env {
		switch k {
		case "OLLAMA_HOST", "OLLAMA_MODELS", "HOME", "PATH", "OLLAMA_ECS_SOURCE_DIR":
			continue // the server's own address and folders are the runner's to choose
		}
		env = append(env, k+"="+v)
	}
	srv, err := ollama.Start(ctx, ollama.Options{
		Binary: bin, TempDir: dir, ReadyTimeout: r.ReadyTimeout, Env: env,
		Command: []string{"/bin/sh", "-c", container.OllamaEntry},
		Logger:  log.With("task", c.TaskArn),
	})
	if err != nil {
		stages.close()
		return nil, err
	}
	started = true
	p := &ollamaProcess{srv: srv, dir: dir, stages: stages, exited: make(chan struct{})}
	go stages.serve(c.Stage, srv.Kill)
	go p.watch()
	return p, nil
}

// fetch does the fetch init container's work: it copies s3://BUCKET/KEY to dir/model.gguf.
func (r *OllamaRunner) fetch(ctx context.Context, src, dir string) error {
	bucket, key, _ := strings.Cut(strings.TrimPrefix(src, "s3://"), "/")
	if bucket == "" || key == "" {
		return fmt.Errorf("%s=%q: want s3://BUCKET/KEY", deployment.EnvSource, src)
	}
	if r.Objects == nil {
		return fmt.Errorf("%s: the runner has no bucket to read from", src)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	out, err := r.Objects.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("fetch %s: %w", src, err)
	}
	defer out.Body.Close()
	f, err := os.Create(filepath.Join(dir, "model.gguf"))
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, out.Body); err != nil {
		f.Close()
		return fmt.Errorf("fetch %s: %w", src, err)
	}
	return f.Close()
}

// stageHooks let the entry script report the stages of its start, through an `ollama` wrapper first on its PATH:
// the wrapper writes the stage to a FIFO and waits for the runner's answer on another, so a fault asking to crash
// at a stage crashes the task exactly there. It reports FETCHING at the script's first look for the model (show,
// pull or create), LOADING as `ollama run` starts and LOADED once it succeeded; then it runs the real binary.
type stageHooks struct {
	bin            string // the folder holding the wrapper
	dir            string
	report, answer *os.File
}

const stageWrapper = `#!/bin/sh
# The local runner's stand-in for the image's ollama: it reports the start's stage and waits for the runner's
# answer (the runner may crash the task there), then runs the real binary.
stages=%s
real=%s
report() {
	echo "$1" >"$stages/report"
	read -r _ <"$stages/answer"
}
case "$1" in
show | pull | create) [ -e "$stages/fetching" ] || { : >"$stages/fetching"; report FETCHING; } ;;
run) report LOADING ;;
esac
if [ "$1" = run ]; then
	"$real" "$@" || exit
	report LOADED
	exit 0
fi
exec "$real" "$@"
`

func newStageHooks(taskDir, binary string) (*stageHooks, error) {
	h := &stageHooks{bin: filepath.Join(taskDir, "bin"), dir: filepath.Join(taskDir, "stages")}
	for _, d := range []string{h.bin, h.dir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(h.bin, "ollama"), []byte(fmt.Sprintf(stageWrapper, shellQuote(h.dir), shellQuote(binary))), 0o755); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name string
		into **os.File
	}{{"report", &h.report}, {"answer", &h.answer}} {
		path := filepath.Join(h.dir, f.name)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			h.close()
			return nil, fmt.Errorf("stage hook %s: %w", path, err)
		}
		// Read-write, so neither side's open blocks and an answer waits in the FIFO for its reader.
		file, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			h.close()
			return nil, err
		}
		*f.into = file
	}
	return h, nil
}

// shellQuote quotes s for /bin/sh: in single quotes, each single quote written as '\”.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// fetched marks the fetching stage as reported (by the runner, for the fetch container).
func (h *stageHooks) fetched() { _ = os.WriteFile(filepath.Join(h.dir, "fetching"), nil, 0o644) }

// serve answers the wrapper's reports until the hooks are closed, crashing the task where stage asks to.
func (h *stageHooks) serve(stage func(Stage) bool, crash func()) {
	lines := bufio.NewScanner(h.report)
	for lines.Scan() {
		if stage(Stage(lines.Text())) {
			crash()
			return
		}
		if _, err := io.WriteString(h.answer, "ok\n"); err != nil {
			return
		}
	}
}

func (h *stageHooks) close() {
	for _, f := range []*os.File{h.report, h.answer} {
		if f != nil {
			f.Close()
		}
	}
}

// unpack lays the image's layers out under rootfs and returns where its models are (its OLLAMA_MODELS, rebased
// under rootfs), or "" for an image that keeps none. Each layer is extracted once into LayerDir and linked into
// each task, so a task of a baked multi-gigabyte model starts without copying it. An empty image is no layers.
func (r *OllamaRunner) unpack(ctx context.Context, image, rootfs string) (string, error) {
	if err := os.MkdirAll(rootfs, 0o755); err != nil {
		return "", err
	}
	if image == "" {
		return "", nil
	}
	ref, err := bake.ParseReference(image)
	if err != nil {
		return "", err
	}
	img, err := remote.Image(ref, remote.WithContext(ctx))
	if err != nil {
		return "", err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	layers, err := img.Layers()
	if err != nil {
		return "", err
	}
	cache := r.LayerDir
	if cache == "" {
		cache = filepath.Join(r.TempDir, "layers")
	}
	for _, l := range layers {
		dir, err := extractLayer(cache, l)
		if err != nil {
			return "", err
		}
		if err := linkTree(dir, rootfs); err != nil {
			return "", err
		}
	}
	for _, kv := range cfg.Config.Env {
		if k, v, _ := strings.Cut(kv, "="); k == "OLLAMA_MODELS" && filepath.IsAbs(v) {
			return filepath.Join(rootfs, v), nil
		}
	}
	return "", nil
}

// extractLayer unpacks one layer into cache/DIGEST once (into a temporary folder first, renamed when complete).
func extractLayer(cache string, l v1.Layer) (string, error) {
	d, err := l.Digest()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, strings.ReplaceAll(d.String(), ":", "-"))
	if _, err := os.Stat(dir); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(cache, "partial-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	rc, err := l.Uncompressed()
	if err != nil {
		return "", err
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", d, err)
		}
		target := filepath.Join(tmp, filepath.Clean("/"+h.Name))
		switch h.Typeflag {
		case tar.TypeDir:
			err = os.MkdirAll(target, 0o755)
		case tar.TypeReg:
			if strings.HasPrefix(filepath.Base(target), ".wh.") {
				continue // a whiteout (a file the layer deletes): a model layer has none
			}
			// Read-only: the file is linked into every task of the image, none may change it for the others.
			err = writeFile(target, tr, os.FileMode(h.Mode)&0o555|0o400)
		default:
			continue // links and devices: a model layer has none
		}
		if err != nil {
			return "", fmt.Errorf("layer %s: %w", d, err)
		}
	}
	if err := os.Rename(tmp, dir); err != nil {
		if _, statErr := os.Stat(dir); statErr == nil {
			return dir, nil // another task unpacked it first
		}
		return "", err
	}
	return dir, nil
}

func copyFile(from, to string) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return err
	}
	return writeFile(to, src, st.Mode().Perm())
}

func writeFile(path string, body io.Reader, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode|0o400)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// linkTree hard-links every file under from to the same place under to, creating folders as it goes.
func linkTree(from, to string) error {
	return filepath.WalkDir(from, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(from, path)
		if err != nil {
			return err
		}
		target := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		os.Remove(target) // a later layer replaces an earlier one's file
		if err := os.Link(path, target); err != nil {
			return copyFile(path, target) // another file system than the layer cache's
		}
		return nil
	})
}

// ollamaProcess is a task's entry script (and the server it started), with the script's exit status and last
// message.
type ollamaProcess struct {
	srv    *ollama.Server
	dir    string
	stages *stageHooks
	exited chan struct{}

	mu       sync.Mutex
	code     int
	reason   string
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

// watch publishes the exit. A script that exits cleanly on our SIGTERM reports 143, as ECS shows for a stopped
// task; a failure's reason is the script's last message (read before Stop removes the log).
func (p *ollamaProcess) watch() {
	<-p.srv.Exited()
	p.stages.close()
	p.mu.Lock()
	p.code = p.srv.ExitCode()
	switch {
	case p.stopping && p.code == 0:
		p.code = 143
	case p.code > 128 && !p.stopping:
		p.reason = fmt.Sprintf("ollama serve killed by signal %d", p.code-128)
	case p.code != 0 && !p.stopping:
		p.reason = scriptMessage(p.srv.LogTail())
	}
	p.mu.Unlock()
	close(p.exited)
}

// scriptMessage picks the entry script's own last message (and the ollama command's error just before it) out of
// the log it shares with the server, whose lines are structured (time=...) or request logs ([GIN]).
func scriptMessage(log string) string {
	var msgs []string
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0 && len(msgs) < 2; i-- {
		l := strings.TrimSpace(lines[i])
		if l == "" || strings.HasPrefix(l, "time=") || strings.HasPrefix(l, "[GIN") {
			continue
		}
		if len(msgs) == 1 && !strings.HasPrefix(l, "Error:") {
			break
		}
		msgs = append([]string{l}, msgs...)
	}
	if len(msgs) == 0 {
		return "the entry script failed"
	}
	return strings.Join(msgs, ": ")
}

func (p *ollamaProcess) Stop(ctx context.Context) error {
	p.mu.Lock()
	select {
	case <-p.exited:
	default:
		p.stopping = true
	}
	p.mu.Unlock()
	err := p.srv.Stop(ctx)
	<-p.exited
	return errors.Join(err, os.RemoveAll(p.dir))
}

// exitedProcess is a task whose container ended before its server started (its fetch failed or crashed).
type exitedProcess struct {
	dir    string
	code   int
	reason string
	done   chan struct{}
}

func exited(dir string, code int, reason string) *exitedProcess {
	p := &exitedProcess{dir: dir, code: code, reason: reason, done: make(chan struct{})}
	close(p.done)
	return p
}

func (p *exitedProcess) Endpoint() string               { return "" }
func (p *exitedProcess) PID() int                       { return 0 }
func (p *exitedProcess) Exited() <-chan struct{}        { return p.done }
func (p *exitedProcess) ExitCode() int                  { return p.code }
func (p *exitedProcess) Reason() string                 { return p.reason }
func (p *exitedProcess) Kill()                          {}
func (p *exitedProcess) Stop(ctx context.Context) error { return os.RemoveAll(p.dir) }
