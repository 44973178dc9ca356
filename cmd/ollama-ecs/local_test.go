package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

// TestLocalUploadOneShot runs `local upload` with no stack up: it starts one for the command, follows the
// deployment the upload starts to its record, and leaves nothing running.
func TestLocalUploadOneShot(t *testing.T) {
	root, err := ollama.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	_, errOllama := ollama.FindBinary(root)
	_, errEngine := engine.DefaultDir()
	if err := errors.Join(errOllama, errEngine); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal(err)
		}
		t.Skipf("run `make tools`: %v", err)
	}
	t.Setenv("OLLAMA_ECS_LOCAL", filepath.Join(t.TempDir(), "no-stack.json"))
	file := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"local", "upload", file}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"execution succeeded", "ready:", "placement  Fargate Spot", "one-shot"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Commands that need a running stack say how to start one.
	err = run(ctx, []string{"local", "list"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "ollama-ecs local up") {
		t.Errorf("list without a stack: %v", err)
	}
}
