package container

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The entry scripts run here under /bin/sh with stub `ollama` and `aws`
// commands that record their arguments, the way ECS runs them
// (`/bin/sh -c <script>`), so the real container behaviour is tested
// without images or a network.

// stubOllama records each call; `serve` blocks until signalled, like the
// real server, and `show` fails unless the model is listed in $STUB_PRESENT (and lists the embedding capability
// when $STUB_EMBEDDING is set).
const stubOllama = `#!/bin/sh
echo "ollama $*" >>"$STUB_LOG"
case "$1" in
serve) trap 'echo "serve stopped" >>"$STUB_LOG"; exit 0' TERM; while :; do sleep 0.05; done ;;
show) [ "$2" = "${STUB_PRESENT:-}" ] || exit 1; [ -z "${STUB_EMBEDDING:-}" ] || printf '  Capabilities\n    embedding    \n' ;;
*) exit 0 ;;
esac
`

const stubAws = `#!/bin/sh
echo "aws $*" >>"$STUB_LOG"
`

func runEntryScript(t *testing.T, script string, env map[string]string, wantLine string) (log string, exitErr error) {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string]string{"ollama": stubOllama, "aws": stubAws} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	source := filepath.Join(dir, "source")
	if err := os.Mkdir(source, 0o755); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "calls.log")

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", script)
	cmd.Env = []string{"PATH=" + bin + ":/usr/bin:/bin", "STUB_LOG=" + logPath, "OLLAMA_ECS_SOURCE_DIR=" + source}
	for k, v := range env {
		if k == "GGUF" {
			if err := os.WriteFile(filepath.Join(source, "model.gguf"), []byte(v), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()

	read := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	if wantLine != "" {
		// Like ECS stopping the task: SIGTERM once the model is loaded.
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(read(), wantLine) {
			select {
			case err := <-done:
				return read(), err
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %q; calls so far:\n%s", wantLine, read())
			}
		}
		time.Sleep(50 * time.Millisecond)
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case err := <-done:
		return read(), err
	case <-ctx.Done():
		t.Fatalf("script did not exit; calls:\n%s", read())
		return "", nil
	}
}

func TestOllamaEntryScript(t *testing.T) {
	cases := []struct {
		name      string
		env       map[string]string
		wantCalls []string
		notCalls  []string
		wantFail  bool
	}{
		{
			name: "ollama source is pulled and loaded",
			env:  map[string]string{"OLLAMA_ECS_MODEL": "llama2:7b", "OLLAMA_ECS_SOURCE": "ollama://llama2:7b"},
			wantCalls: []string{"ollama serve", "ollama list", "ollama show llama2:7b", "ollama pull llama2:7b",
				`ollama run --keepalive=-1s llama2:7b `, "serve stopped"},
			notCalls: []string{"ollama cp", "ollama create", "llama2:7b load"},
		},
		{
			name:      "a registry on the machine itself is pulled from over plain HTTP",
			env:       map[string]string{"OLLAMA_ECS_MODEL": "tiny", "OLLAMA_ECS_SOURCE": "ollama://127.0.0.1:5000/library/tiny:v1"},
			wantCalls: []string{"ollama pull --insecure 127.0.0.1:5000/library/tiny:v1", "ollama cp 127.0.0.1:5000/library/tiny:v1 tiny"},
		},
		{
			name:      "cached model is not pulled again",
			env:       map[string]string{"OLLAMA_ECS_MODEL": "mistral:7b", "OLLAMA_ECS_SOURCE": "ollama://mistral:7b", "STUB_PRESENT": "mistral:7b"},
			wantCalls: []string{"ollama show mistral:7b", "ollama run --keepalive=-1s mistral:7b "},
			notCalls:  []string{"ollama pull"},
		},
		{
			name: "an embedding model, which cannot generate, is loaded by embedding a word",
			env: map[string]string{"OLLAMA_ECS_MODEL": "nomic-embed-text", "OLLAMA_ECS_SOURCE": "ollama://nomic-embed-text",
				"STUB_PRESENT": "nomic-embed-text", "STUB_EMBEDDING": "1"},
			wantCalls: []string{"ollama run --keepalive=-1s nomic-embed-text load"},
		},
		{
			name:      "a different deployment name copies the pulled model",
			env:       map[string]string{"OLLAMA_ECS_MODEL": "team-llama", "OLLAMA_ECS_SOURCE": "ollama://llama2:13b"},
			wantCalls: []string{"ollama pull llama2:13b", "ollama cp llama2:13b team-llama", "ollama run --keepalive=-1s team-llama "},
		},
		{
			name:      "s3 source creates the model from the fetched GGUF",
			env:       map[string]string{"OLLAMA_ECS_MODEL": "tiny", "OLLAMA_ECS_SOURCE": "s3://bucket/models/tiny.gguf", "GGUF": "GGUF"},
			wantCalls: []string{"ollama create tiny -f ", "ollama run --keepalive=-1s tiny "},
			notCalls:  []string{"ollama pull"},
		},
		{
			name:     "s3 source without the fetched file fails",
			env:      map[string]string{"OLLAMA_ECS_MODEL": "tiny", "OLLAMA_ECS_SOURCE": "s3://bucket/models/tiny.gguf"},
			notCalls: []string{"ollama create", "ollama run"},
			wantFail: true,
		},
		{
			name:     "unknown source scheme fails",
			env:      map[string]string{"OLLAMA_ECS_MODEL": "x", "OLLAMA_ECS_SOURCE": "http://example.invalid/x"},
			notCalls: []string{"ollama pull", "ollama run"},
			wantFail: true,
		},
		{
			name:     "missing model name fails before starting the server",
			env:      map[string]string{"OLLAMA_ECS_SOURCE": "ollama://x"},
			notCalls: []string{"ollama serve"},
			wantFail: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			wait := ""
			if !c.wantFail {
				wait = "ollama run"
			}
			log, err := runEntryScript(t, OllamaEntry, c.env, wait)
			if c.wantFail != (err != nil) {
				t.Fatalf("exit error = %v, want failure %v; calls:\n%s", err, c.wantFail, log)
			}
			for _, want := range c.wantCalls {
				if !strings.Contains(log, want) {
					t.Errorf("missing call %q; calls:\n%s", want, log)
				}
			}
			for _, not := range c.notCalls {
				if strings.Contains(log, not) {
					t.Errorf("unexpected call %q; calls:\n%s", not, log)
				}
			}
		})
	}
}

func TestFetchEntryScript(t *testing.T) {
	log, err := runEntryScript(t, FetchEntry, map[string]string{"OLLAMA_ECS_SOURCE": "ollama://llama2:7b"}, "")
	if err != nil || log != "" {
		t.Errorf("ollama source: err=%v calls=%q, want a silent exit 0", err, log)
	}
	log, err = runEntryScript(t, FetchEntry, map[string]string{"OLLAMA_ECS_SOURCE": "s3://bucket/models/m.gguf"}, "")
	if err != nil || !strings.Contains(log, "aws s3 cp --only-show-errors s3://bucket/models/m.gguf ") || !strings.Contains(log, "/model.gguf") {
		t.Errorf("s3 source: err=%v calls=%q, want an aws s3 cp to model.gguf", err, log)
	}
}
