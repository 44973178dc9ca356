package test

import (
	"archive/tar"
	"context"
	"errors"
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

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/ollama/ollama/api"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry/bake"
	"github.com/ollama-ecs/ollama-ecs/local"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
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
