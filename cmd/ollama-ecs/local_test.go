package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// TestLocalUploadOneShot runs `local upload` with no stack up: it starts one for the command, follows the
// deployment the upload starts to its record, and leaves nothing running.
func TestLocalUploadOneShot(t *testing.T) {
	tools.Require(t, tools.Local...)
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
	err := run(ctx, []string{"local", "list"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "ollama-ecs local up") {
		t.Errorf("list without a stack: %v", err)
	}
}

// TestLocalUpAndCommands keeps a stack up (as `local up` does) and drives it with the other local commands.
func TestLocalUpAndCommands(t *testing.T) {
	tools.Require(t, tools.Local...)
	t.Setenv("OLLAMA_ECS_LOCAL", filepath.Join(t.TempDir(), "stack.json"))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	upCtx, stopUp := context.WithCancel(ctx)
	upDone := make(chan error, 1)
	var upOut bytes.Buffer
	go func() { upDone <- run(upCtx, []string{"local", "up"}, &upOut, &upOut) }()
	defer func() {
		stopUp()
		if err := <-upDone; err != nil {
			t.Errorf("local up: %v", err)
		}
	}()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if _, err := os.Stat(os.Getenv("OLLAMA_ECS_LOCAL")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("local up wrote no pointer file:\n%s", upOut.String())
		}
	}
	file := filepath.Join(t.TempDir(), "tiny.gguf")
	if err := tinymodel.WriteFile(file); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) string {
		t.Helper()
		var stdout, stderr bytes.Buffer
		if err := run(ctx, append([]string{"local"}, args...), &stdout, &stderr); err != nil {
			t.Fatalf("local %v: %v\n%s\n%s", args, err, stdout.String(), stderr.String())
		}
		return stdout.String()
	}
	if out := cli("upload", file); !strings.Contains(out, "ready:") || strings.Contains(out, "one-shot") {
		t.Fatalf("upload on a running stack:\n%s", out)
	}
	out := cli("deploy", "tiny-gpu", "--source", "s3://ollama-ecs-models/models/dev/tiny.gguf", "--prefer", "gpu", "--id", "tiny-gpu")
	if !strings.Contains(out, "EC2 g4dn.xlarge") {
		t.Errorf("GPU deploy:\n%s", out)
	}
	if out := cli("list"); !strings.Contains(out, "tiny-gpu") || !strings.Contains(out, "Fargate Spot") {
		t.Errorf("list:\n%s", out)
	}
	if out := cli("history", "tiny-gpu"); !strings.Contains(out, "Deployment ready") || !strings.Contains(out, "SUCCEEDED") {
		t.Errorf("history:\n%s", out)
	}
	cli("stop", "tiny-gpu")
	if out := cli("teardown"); !strings.Contains(out, "stopped 1 deployment(s)") {
		t.Errorf("teardown:\n%s", out)
	}
	// The dev deployments sleep: nothing runs, their endpoints wake them.
	var ds []listedDeployment
	out = cli("list", "--output", "json")
	if err := json.Unmarshal([]byte(out), &ds); err != nil {
		t.Fatal(err)
	}
	for _, d := range ds {
		if d.Status != "SLEEPING" || d.TaskArn != "" {
			t.Errorf("after teardown: %+v, want only sleeping deployments", d)
		}
	}
}

// TestLocalDemo runs `make demo`'s command: every step of the main job must happen, and it must leave nothing
// running.
func TestLocalDemo(t *testing.T) {
	tools.Require(t, tools.Local...)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, []string{"local", "demo"}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
	for _, want := range []string{"[ok  ] generate with the ollama CLI through the load balancer", "[ok  ] a request without the API key is refused",
		"[ok  ] auto-stop postponed while the model is in use", "[ok  ] a burst of 6 concurrent clients scales it out",
		"[ok  ] idleness scales it back in", "[ok  ] a request wakes the sleeping deployment", "[ok  ] the retried request is answered",
		"[ok  ] deploy tinyllama:demo by name: resolved and sized in the registry, its image built, the task runs it",
		"[ok  ] deploy tinyllama:demo again: the image is there, the task starts from it without pulling",
		"(built earlier); 0 blob reads from the model's registry",
		"[ok  ] stack closed: no task, process, port or schedule left"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "[FAIL]") {
		t.Errorf("a demo step failed:\n%s", out)
	}
}
