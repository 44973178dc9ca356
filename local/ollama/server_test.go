package ollama_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/local/ollama/ollamatest"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

const tinyName = "tiny:latest"

// createTiny writes the default tiny GGUF and creates it as tinyName.
func createTiny(ctx context.Context, t *testing.T, client *api.Client) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.WriteFile(path); err != nil {
		t.Fatal(err)
	}
	if err := ollama.CreateFromGGUF(ctx, client, tinyName, path); err != nil {
		t.Fatal(err)
	}
}

// assertGone checks that nothing of a stopped server remains: no process in
// its group, its port free, its folder removed.
func assertGone(t *testing.T, pid int, addr, dir string) {
	t.Helper()
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("pid %d: kill(0) = %v, want ESRCH (process gone)", pid, err)
	}
	if ollama.GroupAlive(pid) {
		t.Errorf("process group %d still has running processes", pid)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Errorf("port of the stopped server is not free: %v", err)
	} else {
		l.Close()
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("server folder %s still exists (stat: %v)", dir, err)
	}
}

func TestServerCreatesLoadsGeneratesAndStops(t *testing.T) {
	bin := ollamatest.Binary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	start := time.Now()
	srv, err := ollama.Start(ctx, ollama.Options{Binary: bin, TempDir: t.TempDir(), Logger: ollamatest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("start-to-ready: %s", time.Since(start).Round(time.Millisecond))
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			srv.Stop(context.Background())
		}
	})

	if srv.URL().String() != "http://"+srv.Addr() {
		t.Errorf("URL %s does not match Addr %s", srv.URL(), srv.Addr())
	}
	client := srv.Client()
	version, err := client.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if version != ollama.Version {
		t.Errorf("server version %q, want %q", version, ollama.Version)
	}

	start = time.Now()
	createTiny(ctx, t, client)
	created := time.Since(start)
	start = time.Now()
	if err := ollama.Load(ctx, client, tinyName); err != nil {
		t.Fatal(err)
	}
	t.Logf("create: %s, load: %s", created.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	ps, err := client.ListRunning(ctx)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(ps.Models, func(m api.ProcessModelResponse) bool { return m.Name == tinyName })
	if i < 0 {
		t.Fatalf("/api/ps after Load lists %+v, want %s", ps.Models, tinyName)
	}
	if m := ps.Models[i]; m.Size <= 0 || m.ExpiresAt.Before(time.Now().Add(24*time.Hour)) {
		t.Errorf("/api/ps entry %+v: want size > 0 and no expiry soon (keep_alive -1)", m)
	}

	start = time.Now()
	var final api.GenerateResponse
	stream := false
	err = client.Generate(ctx, &api.GenerateRequest{
		Model:   tinyName,
		Prompt:  "hello world",
		Stream:  &stream,
		Options: map[string]any{"num_predict": 8, "temperature": 0, "seed": 1},
	}, func(r api.GenerateResponse) error {
		final = r
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("generate: %s for %d tokens (done_reason %q)", time.Since(start).Round(time.Millisecond), final.EvalCount, final.DoneReason)
	if !final.Done || final.EvalCount <= 0 || final.PromptEvalCount <= 0 {
		t.Errorf("generate: done=%v eval_count=%d prompt_eval_count=%d; want done with tokens", final.Done, final.EvalCount, final.PromptEvalCount)
	}
	if final.DoneReason != "length" && final.DoneReason != "stop" {
		t.Errorf("generate: done_reason %q, want length or stop", final.DoneReason)
	}

	pid, addr, dir := srv.PID(), srv.Addr(), srv.Dir()
	start = time.Now()
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	stopped = true
	t.Logf("stop: %s", time.Since(start).Round(time.Millisecond))
	select {
	case <-srv.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	assertGone(t, pid, addr, dir)
	if err := srv.Stop(ctx); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

func TestKillIsReportedThroughExited(t *testing.T) {
	srv := ollamatest.Start(t, ollama.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A loaded model means a runner process too: Kill must take it down.
	client := srv.Client()
	createTiny(ctx, t, client)
	if err := ollama.Load(ctx, client, tinyName); err != nil {
		t.Fatal(err)
	}
	if got := srv.ExitCode(); got != -1 {
		t.Fatalf("ExitCode while running = %d, want -1", got)
	}

	pid, addr, dir := srv.PID(), srv.Addr(), srv.Dir()
	srv.Kill()
	select {
	case <-srv.Exited():
	case <-time.After(10 * time.Second):
		t.Fatal("Exited not closed 10s after Kill")
	}
	if got := srv.ExitCode(); got != 128+int(syscall.SIGKILL) {
		t.Errorf("ExitCode after Kill = %d, want %d", got, 128+int(syscall.SIGKILL))
	}
	if err := srv.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	assertGone(t, pid, addr, dir)
}

func TestPullFailsFastWhenRegistryUnreachable(t *testing.T) {
	// The server's proxy points at a closed loopback port (AllowRegistry is
	// false), and the local registry below is a closed loopback port too: no
	// packet leaves the machine.
	srv := ollamatest.Start(t, ollama.Options{})
	client := srv.Client()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close()

	cases := []struct {
		name string
		pull func(context.Context, *api.Client, string) error
		arg  string
	}{
		{"default registry through the offline proxy", ollama.Pull, "tinyllama:latest"},
		{"loopback registry refusing connections", ollama.PullInsecure, closedAddr + "/library/tiny:latest"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err := c.pull(ctx, client, c.arg)
			elapsed := time.Since(start)
			t.Logf("pull failed in %s: %v", elapsed.Round(time.Millisecond), err)
			if !errors.Is(err, ollama.ErrRegistryUnreachable) {
				t.Fatalf("Pull(%s) = %v, want ErrRegistryUnreachable", c.arg, err)
			}
			var me *ollama.ModelError
			if !errors.As(err, &me) || me.Op != "pull" || me.Model != c.arg {
				t.Errorf("Pull error %#v: want a ModelError for pull %s", err, c.arg)
			}
			if elapsed > 10*time.Second {
				t.Errorf("Pull took %s, want a fast failure", elapsed)
			}
		})
	}
}

func TestStartReportsAServerThatExits(t *testing.T) {
	// /bin/false exits 1 at once, as a broken binary would.
	tmp := t.TempDir()
	_, err := ollama.Start(context.Background(), ollama.Options{Binary: "/bin/false", TempDir: tmp, ReadyTimeout: 5 * time.Second, Logger: ollamatest.Logger(t)})
	var se *ollama.StartError
	if !errors.As(err, &se) || se.Reason != "exited with code 1 before answering" {
		t.Fatalf("Start(/bin/false) = %v, want a StartError for exit code 1", err)
	}
	if entries, err := os.ReadDir(tmp); err != nil || len(entries) != 0 {
		t.Errorf("failed Start left %v in its temp dir (err %v)", entries, err)
	}
}
