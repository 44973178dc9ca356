package ollama

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ollama/ollama/api"
)

// Defaults for the zero values of Options.
const (
	DefaultReadyTimeout = 30 * time.Second
	DefaultStopGrace    = 5 * time.Second
	// startAttempts bounds retries when another process takes the free port
	// between our probe and the server's bind.
	startAttempts = 3
	// readyPollInterval is how often /api/version is tried while starting;
	// the server usually answers within ~0.1 s.
	readyPollInterval = 20 * time.Millisecond
	// logTailBytes is how much of the server log an error quotes.
	logTailBytes = 2048
)

// Options configure Start. The zero value is ready to use.
type Options struct {
	// Binary is the ollama executable; empty means FindBinary().
	Binary string
	// TempDir is where the server's own folder is created; empty means
	// os.TempDir().
	TempDir string
	// ReadyTimeout bounds the wait for /api/version to answer.
	ReadyTimeout time.Duration
	// StopGrace is how long Stop waits after SIGTERM before SIGKILL.
	StopGrace time.Duration
	// Env adds KEY=VALUE entries to the server's environment, after (and so
	// overriding) the ones Start sets, e.g. "OLLAMA_KEEP_ALIVE=1m".
	Env []string
	// AllowRegistry lets the server reach model registries (for `pull`).
	// When false (the default) the server's HTTP(S) proxy is pointed at a
	// closed loopback port, so a pull fails at once with "connection refused"
	// and never leaves the machine. Traffic to loopback is never proxied, so
	// the server still talks to its runners and to a registry on 127.0.0.1.
	AllowRegistry bool
	// Command, when set, runs instead of `<Binary> serve`: a container's entry script that starts the server
	// itself with the environment it is given (the address, folders and proxy above, then Env). Start still
	// returns once the server answers, and Stop and Kill still reach every process of the command's group.
	Command []string
	// Logger receives start/stop events; nil means slog.Default().
	Logger *slog.Logger
}

// Server is a running `ollama serve` owned by this process.
type Server struct {
	cmd     *exec.Cmd
	dir     string
	logPath string
	addr    string
	url     *url.URL
	grace   time.Duration
	log     *slog.Logger
	// scripted is a server started by Options.Command.
	scripted bool

	exited   chan struct{}
	exitCode atomic.Int64

	stopOnce sync.Once
	stopErr  error
}

// StartError reports a server that did not become ready; it quotes the end of
// the server's log, which is where the reason is.
type StartError struct {
	Binary  string // the executable started
	Addr    string // the address it was told to listen on
	Reason  string // what went wrong, e.g. "exited with code 1"
	LogTail string // the last lines of the server log
	Err     error  // the underlying error, if any
}

func (e *StartError) Error() string {
	msg := fmt.Sprintf("start %s serve on %s: %s", e.Binary, e.Addr, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	if e.LogTail != "" {
		msg += "\n--- server log (tail) ---\n" + e.LogTail
	}
	return msg
}

func (e *StartError) Unwrap() error { return e.Err }

// Start runs `ollama serve` on 127.0.0.1 at a free port, with its own models
// folder, HOME and log file inside a new temporary folder, and returns once
// /api/version answers. ctx bounds only the start: the server runs until Stop
// or Kill. On error nothing is left running and the folder is removed.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin := opts.Binary
	if bin == "" {
		var err error
		if bin, err = FindBinary(); err != nil {
			return nil, err
		}
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.StopGrace <= 0 {
		opts.StopGrace = DefaultStopGrace
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}

	dir, err := os.MkdirTemp(opts.TempDir, "ollama-serve-")
	if err != nil {
		return nil, fmt.Errorf("start ollama: create server folder: %w", err)
	}
	for _, sub := range []string{"models", "home"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("start ollama: %w", err)
		}
	}

	var lastErr error
	for attempt := 1; attempt <= startAttempts; attempt++ {
		s, err := startOnce(ctx, bin, dir, opts, logger)
		if err == nil {
			return s, nil
		}
		lastErr = err
		var se *StartError
		if !errors.As(err, &se) || !strings.Contains(se.LogTail, "address already in use") {
			break
		}
		logger.Warn("ollama port taken before the server bound it; retrying", "addr", se.Addr, "attempt", attempt)
	}
	os.RemoveAll(dir)
	return nil, lastErr
}

// startOnce makes one attempt at a fresh port. On error the process (if any)
// is gone; the folder is left to the caller.
func startOnce(ctx context.Context, bin, dir string, opts Options, logger *slog.Logger) (*Server, error) {
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, fmt.Errorf("start ollama: pick a port: %w", err)
	}
	env, err := serverEnv(dir, addr, opts)
	if err != nil {
		return nil, err
	}

	logPath := filepath.Join(dir, "ollama.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start ollama: open log: %w", err)
	}
	logStart, _ := logFile.Seek(0, io.SeekEnd)

	cmd := exec.Command(bin, "serve")
	if len(opts.Command) > 0 {
		cmd = exec.Command(opts.Command[0], opts.Command[1:]...)
	}
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.SysProcAttr = newProcessGroupAttr()
	started := time.Now()
	err = cmd.Start()
	logFile.Close() // the child holds its own descriptor
	if err != nil {
		return nil, &StartError{Binary: bin, Addr: addr, Reason: "exec failed", Err: err}
	}

	s := &Server{
		cmd:     cmd,
		dir:     dir,
		logPath: logPath,
		addr:    addr,
		url:     &url.URL{Scheme: "http", Host: addr},
		grace:   opts.StopGrace, scripted: len(opts.Command) > 0,
		log:    logger.With("component", "ollama", "addr", addr),
		exited: make(chan struct{}),
	}
	s.exitCode.Store(-1)
	go s.wait()

	if err := s.waitReady(ctx, opts.ReadyTimeout); err != nil {
		reason := "not ready"
		select {
		case <-s.exited:
			reason = fmt.Sprintf("exited with code %d before answering", s.ExitCode())
			err = nil
		default:
			s.killGroup()
			<-s.exited
		}
		waitGroupGone(s.cmd.Process.Pid, 2*time.Second)
		return nil, &StartError{Binary: bin, Addr: addr, Reason: reason, Err: err, LogTail: s.logTail(logStart)}
	}
	s.log.Info("ollama serve ready", "pid", s.PID(), "dir", dir, "elapsed", time.Since(started).Round(time.Millisecond))
	return s, nil
}

// serverEnv is the parent's environment without settings that would change
// where the server listens, stores models or sends traffic, plus ours.
func serverEnv(dir, addr string, opts Options) ([]string, error) {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		switch upper := strings.ToUpper(key); {
		case strings.HasPrefix(upper, "OLLAMA_"), upper == "HOME",
			upper == "HTTP_PROXY", upper == "HTTPS_PROXY", upper == "ALL_PROXY", upper == "NO_PROXY":
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HOME="+filepath.Join(dir, "home"),
		"OLLAMA_HOST="+addr,
		"OLLAMA_MODELS="+filepath.Join(dir, "models"),
		"OLLAMA_NOPRUNE=1",   // nothing to prune in a fresh folder; skip the walk
		"OLLAMA_NO_CLOUD=1",  // no remote inference or web search
		"OLLAMA_NOHISTORY=1", // no readline history written under HOME
	)
	if !opts.AllowRegistry {
		dead, err := closedLoopbackAddr()
		if err != nil {
			return nil, fmt.Errorf("start ollama: pick a closed port for the offline proxy: %w", err)
		}
		env = append(env, "HTTPS_PROXY=http://"+dead, "HTTP_PROXY=http://"+dead)
	}
	return append(env, opts.Env...), nil
}

// freeLoopbackAddr asks the kernel for a free port on 127.0.0.1. The port is
// released before the server binds it, hence the retry in Start.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	return addr, l.Close()
}

// closedLoopbackAddr returns a loopback address nothing listens on, so a
// connection to it is refused at once.
func closedLoopbackAddr() (string, error) { return freeLoopbackAddr() }

// wait reaps the process and publishes its exit code. A process killed by a
// signal gets 128+signal, the convention of shells and of ECS container exit
// codes (137 for SIGKILL).
func (s *Server) wait() {
	err := s.cmd.Wait()
	code := s.cmd.ProcessState.ExitCode()
	if ws, ok := s.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = 128 + int(ws.Signal())
	}
	s.exitCode.Store(int64(code))
	s.log.Info("ollama serve exited", "pid", s.cmd.Process.Pid, "code", code, "err", err)
	close(s.exited)
}

// waitReady polls /api/version until it answers 200, the process exits, ctx
// ends or timeout passes.
func (s *Server) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Transport: loopbackTransport(), Timeout: time.Second}
	versionURL := s.url.JoinPath("/api/version").String()
	tick := time.NewTicker(readyPollInterval)
	defer tick.Stop()
	var lastErr error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, versionURL, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET /api/version: %s", resp.Status)
		}
		lastErr = err
		select {
		case <-s.exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer from /api/version within %s: %w", timeout, errors.Join(ctx.Err(), lastErr))
		case <-tick.C:
		}
	}
}

// loopbackTransport never uses a proxy and dials quickly: the server is on
// this machine, so a slow dial means it is not there.
func loopbackTransport() *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 2 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() *url.URL {
	u := *s.url
	return &u
}

// Addr is "127.0.0.1:PORT", the value of OLLAMA_HOST for a client.
func (s *Server) Addr() string { return s.addr }

// PID is the process id of `ollama serve`, also its process group id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Dir is the server's own folder (models/, home/, ollama.log).
func (s *Server) Dir() string { return s.dir }

// LogPath is the file that receives the server's stdout and stderr.
func (s *Server) LogPath() string { return s.logPath }

// Client returns an Ollama API client for this server, over a transport that
// never goes through a proxy.
func (s *Server) Client() *api.Client {
	return api.NewClient(s.URL(), &http.Client{Transport: loopbackTransport()})
}

// Exited is closed once the server process has exited, for whatever reason;
// ExitCode then tells how.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// ExitCode is the server's exit status once Exited is closed (128+signal when
// a signal ended it, e.g. 137 after Kill), and -1 while it runs.
func (s *Server) ExitCode() int { return int(s.exitCode.Load()) }

// Kill sends SIGKILL to the server and everything in its process group at
// once, as a crash would. It does not wait: watch Exited. Call Stop later to
// remove the folder.
func (s *Server) Kill() {
	s.killGroup()
}

func (s *Server) killGroup() {
	signalGroup(s.cmd.Process.Pid, syscall.SIGKILL)
}

// Stop ends the server: SIGTERM to its process group, SIGKILL after the grace
// period (or at once if ctx ends), then waits until the process and its
// runners are gone and removes the server's folder. It is safe to call more
// than once and after Kill or a crash; later calls return the first result.
func (s *Server) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() { s.stopErr = s.stop(ctx) })
	return s.stopErr
}

func (s *Server) stop(ctx context.Context) error {
	pid := s.cmd.Process.Pid
	select {
	case <-s.exited:
	default:
		if s.scripted {
			// As ECS stops a container: SIGTERM to its first process (the script passes it on), SIGKILL to all later.
			_ = syscall.Kill(pid, syscall.SIGTERM)
		} else {
			signalGroup(pid, syscall.SIGTERM)
		}
		grace := time.NewTimer(s.grace)
		defer grace.Stop()
		select {
		case <-s.exited:
		case <-grace.C:
			s.log.Warn("ollama serve ignored SIGTERM; sending SIGKILL", "pid", pid, "grace", s.grace)
		case <-ctx.Done():
		}
	}
	// Runners may outlive the server process; the group signal reaches them.
	signalGroup(pid, syscall.SIGKILL)

	var errs []error
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		errs = append(errs, fmt.Errorf("stop ollama pid %d: still running 10s after SIGKILL", pid))
	}
	if !waitGroupGone(pid, 5*time.Second) {
		errs = append(errs, fmt.Errorf("stop ollama pid %d: processes of its group still running after SIGKILL", pid))
	}
	if err := os.RemoveAll(s.dir); err != nil {
		errs = append(errs, fmt.Errorf("stop ollama: remove %s: %w", s.dir, err))
	}
	return errors.Join(errs...)
}

// waitGroupGone polls until no live process is left in process group pgid,
// reporting false if some still run after timeout.
func waitGroupGone(pgid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		if !groupAlive(pgid) {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		signalGroup(pgid, syscall.SIGKILL)
		time.Sleep(20 * time.Millisecond)
	}
}

// logTail returns the end of the log written since offset from.
// LogTail is the end of the server's log (its command's output), while the server's folder exists.
func (s *Server) LogTail() string { return s.logTail(0) }

func (s *Server) logTail(from int64) string {
	f, err := os.Open(s.logPath)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	start := max(from, st.Size()-logTailBytes)
	buf := make([]byte, st.Size()-start)
	n, _ := f.ReadAt(buf, start)
	return strings.TrimSpace(string(bytes.ToValidUTF8(buf[:n], nil)))
}

// String describes the server for logs.
func (s *Server) String() string {
	return "ollama serve pid " + strconv.Itoa(s.PID()) + " on " + s.addr
}
