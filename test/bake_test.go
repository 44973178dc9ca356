package test

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry/bake"
	"github.com/ollama-ecs/ollama-ecs/deployment"
	"github.com/ollama-ecs/ollama-ecs/events"
	"github.com/ollama-ecs/ollama-ecs/functions/steps/modelimage"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/workflow"
)

// TestBakeModelImage: a model in an Ollama registry (put there by the real `ollama push`) is baked into an image
// in another registry without a Docker daemon: the base image plus a layer of Ollama's on-disk layout, streamed
// across. The image's layer, unpacked, is a models folder a real `ollama serve` lists and generates from, with no
// pull. A second bake finds the tag and builds nothing; a source that breaks off half way leaves no tag.
func TestBakeModelImage(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	pushed, err := s.PushModel(ctx, "tinyllama:bake", tinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	images, err := localreg.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer images.Close()
	base := images.Host + "/ollama/ollama:base"
	baseImg, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref(t, base), baseImg, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	models := registry.NewClient(s.Registry.Host, "")
	target := images.Host + "/models:tinyllama-bake"
	digest, built, err := bake.Bake(ctx, models, "tinyllama:bake", base, target)
	if err != nil || !built {
		t.Fatalf("bake: %v (built %v)", err, built)
	}
	again, built, err := bake.Bake(ctx, models, "tinyllama:bake", base, target)
	if err != nil || built || again != digest {
		t.Errorf("second bake: %s built=%v %v, want the existing %s", again, built, err, digest)
	}

	// Unpack the model layer and serve from it.
	img, err := remote.Image(ref(t, target), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := img.ConfigFile()
	if !strings.Contains(strings.Join(cfg.Config.Env, " "), "OLLAMA_MODELS="+bake.BakedModelsDir) {
		t.Errorf("image env %v lacks OLLAMA_MODELS", cfg.Config.Env)
	}
	layers, _ := img.Layers()
	dir := t.TempDir()
	untar(t, layers[len(layers)-1], dir)
	srv, err := ollama.Start(ctx, ollama.Options{TempDir: t.TempDir(), Logger: quiet,
		Env: []string{"OLLAMA_MODELS=" + filepath.Join(dir, bake.BakedModelsDir)}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop(context.WithoutCancel(ctx))
	list, err := srv.Client().List(ctx)
	if err != nil || len(list.Models) != 1 || list.Models[0].Name != pushed {
		t.Fatalf("the baked folder lists %+v (%v), want %s", list, err, pushed)
	}
	stream := false
	var resp api.GenerateResponse
	if err := srv.Client().Generate(ctx, &api.GenerateRequest{Model: pushed, Prompt: "hi", Stream: &stream,
		Options: map[string]any{"num_predict": 3}}, func(r api.GenerateResponse) error { resp = r; return nil }); err != nil || resp.EvalCount == 0 {
		t.Errorf("generate from the baked model: %v (eval_count %d)", err, resp.EvalCount)
	}

	// A source registry that breaks off in the middle of a blob: the build fails and nothing is tagged.
	upstream, _ := url.Parse("http://" + s.Registry.Host)
	proxy := httputil.NewSingleHostReverseProxy(upstream)
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") && r.Header.Get("Range") == "" {
			// Every blob breaks off after 10 bytes: the connection closes short of its length.
			w.Header().Set("Content-Length", "100000")
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 10))
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	defer broken.Close()
	host := strings.TrimPrefix(broken.URL, "http://")
	halfTag := images.Host + "/models:half-built"
	_, _, err = bake.Bake(ctx, registry.NewClient(host, ""), host+"/library/tinyllama:bake", base, halfTag)
	if err == nil {
		t.Fatal("a bake whose source broke off succeeded")
	}
	var broke *registry.RegistryError
	if !errors.As(err, &broke) || broke.Host != host || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("a source that breaks off: %T %v, want a RegistryError of the model's registry %s", err, err, host)
	}
	if _, herr := remote.Head(ref(t, halfTag), remote.WithContext(ctx)); herr == nil {
		t.Errorf("a half-built image is tagged (bake error: %v)", err)
	}
}

// ref parses an image reference on a loopback registry.
func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// untar unpacks an image layer into dir.
func untar(t *testing.T, layer interface{ Uncompressed() (io.ReadCloser, error) }, dir string) {
	t.Helper()
	rc, err := layer.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, filepath.Clean("/"+h.Name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(f, tr); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
}

// TestDeployFromModelImage: the first deployment of a registry model builds its image in the stack's repository
// ("Ensure model image") and registers the task definitions that run it; its task runs that image. A second
// deployment finds the image, registers nothing new, and its task starts from the image: the model's registry
// serves it nothing. Two deployments of another model at once build its image once.
func TestDeployFromModelImage(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 3*time.Minute)
	model, err := s.PushModel(ctx, "tinyllama:img", tinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	first := succeeded(t, deployByName(t, s, events.DeployRequest{Model: "tinyllama:img", DeploymentID: "img-first"}))
	im := first.Image
	if im == nil || !im.Built || im.TaskDefinitions == nil || !strings.HasPrefix(im.Image, s.ImageRepository()+":sha256-") {
		t.Fatalf("first deployment's image %+v, want one built now in %s", im, s.ImageRepository())
	}
	hex12 := strings.TrimPrefix(im.Image, s.ImageRepository()+":sha256-")[:12]
	if !strings.Contains(im.TaskDefinitions.CPU, "task-definition/ollama-cpu-"+hex12+":") ||
		!strings.Contains(im.TaskDefinitions.GPU, "task-definition/ollama-gpu-"+hex12+":") {
		t.Errorf("task definitions %+v, want the model's copies of ollama-cpu and ollama-gpu", im.TaskDefinitions)
	}
	td, err := s.ECS.DescribeTaskDefinition(ctx, &ecs.DescribeTaskDefinitionInput{TaskDefinition: aws.String(im.TaskDefinitions.CPU)})
	if err != nil || aws.ToString(td.TaskDefinition.ContainerDefinitions[0].Image) != im.Image {
		t.Errorf("registered task definition: %v %+v, want its ollama container on %s", err, td, im.Image)
	}
	served := s.Registry.BlobGets("library/tinyllama")

	second := succeeded(t, deployByName(t, s, events.DeployRequest{Model: "tinyllama:img", DeploymentID: "img-second"}))
	if second.Image == nil || second.Image.Built || second.Image.Image != im.Image || *second.Image.TaskDefinitions != *im.TaskDefinitions {
		t.Errorf("second deployment's image %+v, want %s as it was, not built again", second.Image, im.Image)
	}
	if got := s.Registry.BlobGets("library/tinyllama"); got != served {
		t.Errorf("the model's registry served %d blob reads to the second deployment, want none (its task runs the image)", got-served)
	}
	base, _ := url.Parse(second.Endpoint)
	stream := false
	var resp api.GenerateResponse
	if err := api.NewClient(base, http.DefaultClient).Generate(ctx, &api.GenerateRequest{Model: model, Prompt: "hi", Stream: &stream,
		Options: map[string]any{"num_predict": 3}}, func(r api.GenerateResponse) error { resp = r; return nil }); err != nil || resp.EvalCount == 0 {
		t.Errorf("generate from the baked model: %v (eval_count %d)", err, resp.EvalCount)
	}

	// Two deployments of a model with no image yet, at once: one builds it, the other waits for that build.
	if _, err := s.PushModel(ctx, "tinyllama:twice", tinyGGUF(t)); err != nil {
		t.Fatal(err)
	}
	arns := make([]string, 2)
	for i := range arns {
		if arns[i], err = s.Deploy(ctx, events.DeployRequest{Model: "tinyllama:twice", DeploymentID: fmt.Sprintf("twice-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	built := 0
	for _, arn := range arns {
		rec := succeeded(t, waitDone(t, s, arn))
		if rec.Image == nil || rec.Image.TaskDefinitions == nil {
			t.Errorf("%s: image %+v, want the model's", rec.DeploymentID, rec.Image)
		} else if rec.Image.Built {
			built++
		}
	}
	if built != 1 {
		t.Errorf("%d of two concurrent deployments built the image, want exactly one", built)
	}
}

// TestModelImageBadModel: a registry model whose manifest gives its license layer a size it does not have passes
// Validate (which reads the model layer's header only), but the image build, which copies every layer, finds the lie: the deployment fails with BadModelError in the
// history, no task is started, no image is tagged and the build's lock is released.
func TestModelImageBadModel(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	gguf := tinyGGUF(t)
	license := []byte("MIT License: do what you like")
	if err := s.Registry.Push(ctx, "library/liar", "v1", []localreg.Layer{{MediaType: registry.MediaModel, Data: gguf},
		{MediaType: "application/vnd.ollama.image.license", Data: license}}, map[int]int64{1: int64(len(license)) + 100}); err != nil {
		t.Fatal(err)
	}
	ex := deployByName(t, s, events.DeployRequest{Model: s.Registry.Host + "/library/liar:v1", DeploymentID: "liar"})
	failedWith(t, ex, "BadModelError", "Deployment failed")
	if !ranState(ex, "Ensure model image") || ranState(ex, "Run ECS task") {
		t.Errorf("want the failure at Ensure model image, before any task:\n%s", deployment.RenderHistory(ex.Events))
	}
	t.Logf("cause: %s", deployment.ReadableCause(ex.Cause))
	assertNothingLeft(t, s, "liar")
	tags, err := remote.List(ref(t, s.ImageRepository()).Context(), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range tags {
		if strings.HasPrefix(tag, "sha256-") {
			t.Errorf("the repository holds %s:%s after a failed build", s.ImageRepository(), tag)
		}
	}
	if out, err := s.Parameters.GetParametersByPath(ctx, &ssm.GetParametersByPathInput{Path: aws.String(deployment.DefaultConfig().ImageLockPrefix), Recursive: aws.Bool(true)}); err != nil || len(out.Parameters) != 0 {
		t.Errorf("build locks left: %v %+v", err, out)
	}
}

// deployByName deploys a model by its name (no upload) and waits for the execution's end.
func deployByName(t *testing.T, s *local.Stack, req events.DeployRequest) engine.Execution {
	t.Helper()
	arn, err := s.Deploy(ctxFor(t, 10*time.Second), req)
	if err != nil {
		t.Fatal(err)
	}
	return waitDone(t, s, arn)
}

// TestModelImageBuildOutlastsTheWait: another execution holds the model's build lock and never finishes: after the
// state machine's retries of "Ensure model image" (shortened here to 20 ms each) the deployment goes on, pulling
// the model at start, and its record says why.
func TestModelImageBuildOutlastsTheWait(t *testing.T) {
	s := startStack(t, local.Options{})
	ctx := ctxFor(t, 2*time.Minute)
	ref, err := s.PushModel(ctx, "tinyllama:held", tinyGGUF(t))
	if err != nil {
		t.Fatal(err)
	}
	_, raw, r, err := registry.NewClient(s.Registry.Host, "").Manifest(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	lock := deployment.DefaultConfig().ImageLockPrefix + "/" + modelimage.Tag(r, raw)
	if _, err := s.Parameters.PutParameter(ctx, &ssm.PutParameterInput{Name: aws.String(lock),
		Value: aws.String("a-stuck-execution " + time.Now().UTC().Format(time.RFC3339)), Type: ssmtypes.ParameterTypeString}); err != nil {
		t.Fatal(err)
	}
	cfg := s.ECS.Config()
	def, err := workflow.LocalDefinition(cfg.Region, cfg.Account)
	if err != nil {
		t.Fatal(err)
	}
	input, _ := json.Marshal(events.DeployRequest{Model: "tinyllama:held", DeploymentID: "held"})
	arn, err := s.Engine.StartExecution(ctx, def, "held", json.RawMessage(input), engine.WithStateMachineName(local.StateMachine),
		engine.WithWaitOverride(local.WaitForHealth, 200*time.Millisecond), engine.WithRetryIntervalOverride(local.EnsureModelImage, 20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	ex := waitDone(t, s, arn)
	rec := succeeded(t, ex)
	if n := len(retried(ex, local.EnsureModelImage)); n != 45 {
		t.Errorf("Ensure model image retried %d times, want the ASL's 45", n)
	}
	if rec.Image == nil || rec.Image.TaskDefinitions != nil || rec.Image.Error != "ImageBuildInProgressError" ||
		!strings.Contains(rec.ImageText(), "pulled at start: ImageBuildInProgressError") || !strings.Contains(rec.ImageText(), "a-stuck-execution") {
		t.Errorf("image %+v (%s), want pulled at start, saying another execution holds the build", rec.Image, rec.ImageText())
	}
}
