package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
	localreg "github.com/ollama-ecs/ollama-ecs/local/registry"
	"github.com/ollama-ecs/ollama-ecs/local/tinymodel"
)

func TestParse(t *testing.T) {
	for in, want := range map[string]string{
		"qwen3":                                "registry.ollama.ai/library/qwen3:latest",
		"qwen3:8b":                             "registry.ollama.ai/library/qwen3:8b",
		"team/bot:v1":                          "registry.ollama.ai/team/bot:v1",
		"127.0.0.1:5000/library/tiny":          "127.0.0.1:5000/library/tiny:latest",
		"mirror.example.com/library/gemma3:4b": "mirror.example.com/library/gemma3:4b",
		"Llama3.2:3B":                          "registry.ollama.ai/library/llama3.2:3B",
	} {
		r, err := registry.Parse(in, registry.DefaultHost)
		if err != nil || r.String() != want {
			t.Errorf("Parse(%q) = %s, %v; want %s", in, r, err, want)
		}
	}
	for _, bad := range []string{"", "a/b/c/d", "bad host!/x/y", "qwen3:", "x:tag with space", "../etc/passwd"} {
		if r, err := registry.Parse(bad, registry.DefaultHost); err == nil {
			t.Errorf("Parse(%q) = %s, want an error", bad, r)
		}
	}
	if r, _ := registry.Parse("qwen3:8b", registry.DefaultHost); r.Short() != "qwen3:8b" {
		t.Errorf("short name %q", r.Short())
	}
}

// server is a local registry holding the tiny model (followed by 8 MiB that sizing must never read) as
// library/tiny:latest, with a projector as library/tiny-vision and two model layers as library/split.
func server(t *testing.T) (*localreg.Server, []byte) {
	t.Helper()
	s, err := localreg.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	tiny, err := tinymodel.Bytes(tinymodel.Options{BlockCount: 3, ContextLength: 4096})
	if err != nil {
		t.Fatal(err)
	}
	model := append(bytes.Clone(tiny), make([]byte, 8<<20)...)
	ctx := context.Background()
	push := func(repo string, layers []localreg.Layer, sizes map[int]int64) {
		if err := s.Push(ctx, repo, "latest", layers, sizes); err != nil {
			t.Fatal(err)
		}
	}
	push("library/tiny", []localreg.Layer{{MediaType: registry.MediaModel, Data: model},
		{MediaType: "application/vnd.ollama.image.template", Data: []byte("{{ .Prompt }}")}}, nil)
	push("library/tiny-vision", []localreg.Layer{{MediaType: registry.MediaModel, Data: model},
		{MediaType: registry.MediaProjector, Data: make([]byte, 1000)}}, nil)
	push("library/split", []localreg.Layer{{MediaType: registry.MediaModel, Data: model}, {MediaType: registry.MediaModel, Data: tiny}}, nil)
	push("library/liar", []localreg.Layer{{MediaType: registry.MediaModel, Data: model}}, map[int]int64{0: int64(len(model)) * 2})
	push("library/hostile", []localreg.Layer{{MediaType: registry.MediaModel,
		Data: append([]byte("GGUF\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x40"), make([]byte, 64)...)}}, nil)
	return s, model
}

func client(s *localreg.Server, cache registry.Cache) *registry.Client {
	return &registry.Client{Host: s.Host, PlainHTTP: func(string) bool { return true }, Cache: cache, Backoff: time.Millisecond}
}

// countingCache is a DirCache that counts what the resolver puts and gets.
type countingCache struct {
	dir        registry.DirCache
	gets, puts int
}

func (c *countingCache) Get(d string) (catalog.Model, bool) { c.gets++; return c.dir.Get(d) }
func (c *countingCache) Put(d string, m catalog.Model)      { c.puts++; c.dir.Put(d, m) }

func TestResolve(t *testing.T) {
	s, model := server(t)
	ctx := context.Background()
	cache := &countingCache{dir: registry.DirCache{Dir: t.TempDir()}}
	c := client(s, cache)
	res, err := c.Resolve(ctx, "tiny")
	if err != nil {
		t.Fatal(err)
	}
	m := res.Model
	if m.Name != s.Host+"/library/tiny:latest" || m.Family != "llama" || m.BlockCount != 3 || m.ContextLength != 4096 ||
		m.SizeBytes != int64(len(model)) || res.Cached || res.HeaderBytes <= 0 || res.HeaderBytes > 2<<20 {
		t.Fatalf("resolved %+v (%d header bytes)", m, res.HeaderBytes)
	}
	t.Logf("sized a %d-byte model from %d header bytes", len(model), res.HeaderBytes)
	again, err := c.Resolve(ctx, s.Host+"/library/tiny:latest")
	if err != nil || !again.Cached || again.HeaderBytes != 0 || !reflect.DeepEqual(again.Model, m) || cache.puts != 1 {
		t.Errorf("second resolve: %+v %v (puts %d)", again, err, cache.puts)
	}
	vision, err := c.Resolve(ctx, "tiny-vision")
	if err != nil || vision.Model.SizeBytes != int64(len(model))+1000 {
		t.Errorf("a projector is sized with the model: %+v %v", vision.Model, err)
	}

	for name, want := range map[string]string{
		"nosuch":  "has no model library/nosuch:latest (404)",
		"split":   "split over several model layers",
		"liar":    "the manifest says its model layer has",
		"hostile": "not a usable GGUF",
	} {
		_, err := c.Resolve(ctx, name)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	// Uncached, the lie shows in the size the registry serves.
	if _, err := client(s, nil).Resolve(ctx, "liar"); err == nil || !strings.Contains(err.Error(), "the registry serves 8697568") {
		t.Errorf("liar, uncached: %v", err)
	}
	var nf *registry.NotFoundError
	if _, err := c.Resolve(ctx, "nosuch"); !errors.As(err, &nf) {
		t.Errorf("unknown name: %T", err)
	}
}

// TestUnreliableRegistry: a registry that answers 429 or 500 is tried again and then reported unreachable; one
// that answers too slowly or not at all is unreachable; a manifest whose digest is not the one announced is bad.
func TestUnreliableRegistry(t *testing.T) {
	s, _ := server(t)
	ctx := context.Background()
	upstream, _ := url.Parse("http://" + s.Host)
	var calls atomic.Int32
	proxy := func(fault func(w http.ResponseWriter, r *http.Request, n int32) bool) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if fault(w, r, calls.Add(1)) {
				return
			}
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, upstream.String()+r.URL.Path, nil)
			req.Header = r.Header.Clone()
			resp, err := http.DefaultTransport.RoundTrip(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			for k, v := range resp.Header {
				w.Header()[k] = v
			}
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
		}))
		t.Cleanup(srv.Close)
		return strings.TrimPrefix(srv.URL, "http://")
	}
	resolve := func(host string, timeout time.Duration) error {
		c := &registry.Client{Host: host, PlainHTTP: func(string) bool { return true }, Backoff: time.Millisecond,
			HTTP: &http.Client{Timeout: timeout}}
		_, err := c.Resolve(ctx, "tiny")
		return err
	}

	calls.Store(0)
	once429 := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if n == 1 {
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return true
		}
		return false
	})
	if err := resolve(once429, 5*time.Second); err != nil {
		t.Errorf("one 429, then served: %v", err)
	}
	always500 := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		http.Error(w, "down", http.StatusInternalServerError)
		return true
	})
	var unreachable *registry.RegistryError
	if err := resolve(always500, 5*time.Second); !errors.As(err, &unreachable) || !strings.Contains(err.Error(), "500") {
		t.Errorf("always 500: %v", err)
	}
	slow := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		time.Sleep(300 * time.Millisecond)
		return false
	})
	if err := resolve(slow, 100*time.Millisecond); !errors.As(err, &unreachable) {
		t.Errorf("slow registry: %v", err)
	}
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	if err := resolve(closed, time.Second); !errors.As(err, &unreachable) || !strings.Contains(err.Error(), closed) {
		t.Errorf("nothing listening: %v", err)
	}
	unauthorized := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		http.Error(w, "auth", http.StatusUnauthorized)
		return true
	})
	if err := resolve(unauthorized, time.Second); !errors.As(err, &unreachable) || !strings.Contains(err.Error(), "needs credentials") {
		t.Errorf("401: %v", err)
	}
	blobGone := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.NotFound(w, r)
			return true
		}
		return false
	})
	if err := resolve(blobGone, time.Second); err == nil || !strings.Contains(err.Error(), "names a blob the registry does not have") {
		t.Errorf("blob 404: %v", err)
	}
	wrongDigest := proxy(func(w http.ResponseWriter, r *http.Request, n int32) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
			w.Write([]byte(`{"schemaVersion":2,"layers":[]}`))
			return true
		}
		return false
	})
	if err := resolve(wrongDigest, time.Second); err == nil || !strings.Contains(err.Error(), "the registry says sha256:000") {
		t.Errorf("digest mismatch: %v", err)
	}
}
