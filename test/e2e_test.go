// Package test holds the end-to-end tests: the real ASL on the real local engine, the real handlers over the
// Lambda Invoke API, and the local cloud whose tasks are real `ollama serve` processes.
package test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// record is the state machine's output.
type record = deployment.Record

func startStack(t testing.TB, opts local.Options) *local.Stack {
	t.Helper()
	tools.Require(t, tools.Local...)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if opts.HealthWait == 0 {
		opts.HealthWait = 200 * time.Millisecond
	}
	s, err := local.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("closing the stack: %v", err)
		}
	})
	return s
}

func tinyGGUF(t *testing.T) []byte {
	t.Helper()
	b, err := tinymodel.Bytes(tinymodel.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitDone(t testing.TB, s *local.Stack, arn string) engine.Execution {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	ex, err := s.Engine.Wait(ctx, arn)
	if err != nil {
		t.Fatal(err)
	}
	if testing.Verbose() {
		t.Logf("history of %s:\n%s", ex.Name, deployment.RenderHistory(ex.Events))
	}
	return ex
}

func TestUploadDeploysToCPUAndGenerates(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := s.Upload(ctx, "models/tiny.gguf", bytes.NewReader(tinyGGUF(t))); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, s, started.ExecutionArn)
	if ex.Status != engine.StatusSucceeded {
		t.Fatalf("status %s: %s: %s\n%s", ex.Status, ex.Error, ex.Cause, deployment.RenderHistory(ex.Events))
	}
	var rec record
	if err := json.Unmarshal(ex.Output, &rec); err != nil {
		t.Fatal(err)
	}
	if rec.Placement != "Fargate Spot" || rec.Model != "tiny" || rec.Env != "dev" || rec.AutoStopAt == "" {
		t.Errorf("record %+v", rec)
	}
	base, _ := url.Parse(rec.Endpoint)
	client := api.NewClient(base, http.DefaultClient)
	stream := false
	var resp api.GenerateResponse
	err = client.Generate(ctx, &api.GenerateRequest{Model: "tiny", Prompt: "hello", Stream: &stream,
		Options: map[string]any{"num_predict": 5}}, func(r api.GenerateResponse) error { resp = r; return nil })
	if err != nil {
		t.Fatal(err)
	}
	if resp.EvalCount == 0 || !resp.Done {
		t.Errorf("generate: eval_count %d done %v reason %q", resp.EvalCount, resp.Done, resp.DoneReason)
	}
}

// TestUploadDefaults: an upload carries no request, so the stack's UPLOAD_DEFAULTS give its required speed and
// ranking: ranked by speed, the tiny upload goes to a GPU placement instead of the cheapest, Fargate Spot.
func TestUploadDefaults(t *testing.T) {
	s := startStack(t, local.Options{UploadDefaults: events.Requirements{MinTokensPerSecond: 100, Optimize: "speed"}})
	ctx := ctxFor(t, 2*time.Minute)
	if err := s.Upload(ctx, "models/tiny.gguf", bytes.NewReader(tinyGGUF(t))); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, s, started.ExecutionArn)
	rec := succeeded(t, ex)
	if !strings.HasPrefix(rec.Placement, "EC2 ") {
		t.Errorf("placement %q, want the fastest (a GPU instance)", rec.Placement)
	}
	carried := false
	for _, e := range ex.Events {
		if e.StateName == "Validate request" && len(e.Output) > 0 {
			carried = bytes.Contains(e.Output, []byte(`"minTokensPerSecond":100`)) && bytes.Contains(e.Output, []byte(`"optimize":"speed"`))
		}
	}
	if !carried {
		t.Error("the validated request lacks the upload defaults")
	}
}

// TestAnyModelFromTheRegistry: a model the catalog does not list is resolved against the registry (here the local
// one, populated by the real `ollama push`), sized from its header with ranged reads, deployed, pulled by the task
// and served; a name the registry does not have is refused, naming the registry, with nothing started.
func TestAnyModelFromTheRegistry(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	ref, err := s.PushModel(ctx, "tinyllama:3l", tinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	arn, err := s.Deploy(ctx, events.DeployRequest{Model: "tinyllama:3l", DeploymentID: "from-registry"})
	if err != nil {
		t.Fatal(err)
	}
	rec := succeeded(t, waitDone(t, s, arn))
	if rec.Model != ref {
		t.Errorf("record model %q, want %q", rec.Model, ref)
	}
	base, _ := url.Parse(rec.Endpoint)
	stream := false
	var resp api.GenerateResponse
	if err := api.NewClient(base, http.DefaultClient).Generate(ctx, &api.GenerateRequest{Model: ref, Prompt: "hi", Stream: &stream,
		Options: map[string]any{"num_predict": 3}}, func(r api.GenerateResponse) error { resp = r; return nil }); err != nil || resp.EvalCount == 0 {
		t.Errorf("generate: %v (eval_count %d)", err, resp.EvalCount)
	}

	arn, err = s.Deploy(ctx, events.DeployRequest{Model: "nosuch:1b", DeploymentID: "not-in-registry"})
	if err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, s, arn)
	failedWith(t, ex, "UnknownModelError", "Request rejected")
	if !strings.Contains(ex.Cause, "registry "+s.Registry.Host+" has no such model") {
		t.Errorf("cause %q does not name the registry", ex.Cause)
	}
	assertNothingLeft(t, s, "not-in-registry")
}

// TestEmbeddingModel: an embedding model (its GGUF has a pooling type) cannot generate, so its start loads it by
// embedding; it is reported ready and embeds through its endpoint.
func TestEmbeddingModel(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	emb, err := tinymodel.Bytes(tinymodel.Options{PoolingType: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Upload(ctx, "models/tiny-embed.gguf", bytes.NewReader(emb)); err != nil {
		t.Fatal(err)
	}
	started, err := s.WaitForExecution(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	rec := succeeded(t, waitDone(t, s, started.ExecutionArn))
	base, _ := url.Parse(rec.Endpoint)
	resp, err := api.NewClient(base, http.DefaultClient).Embed(ctx, &api.EmbedRequest{Model: "tiny-embed", Input: "hello"})
	if err != nil || len(resp.Embeddings) != 1 || len(resp.Embeddings[0]) != 64 {
		t.Fatalf("embed: %v (%d embeddings)", err, len(resp.Embeddings))
	}
}
