// Package registry is an OCI registry on loopback, in process (go-containerregistry's registry package): the local
// stand-in for registry.ollama.ai. The real `ollama push --insecure` and `ollama pull --insecure` work against it,
// given what the real registries do and the package does not: absolute upload Locations, and blob GETs redirected to
// another host name (Ollama's downloader insists on a redirect), here 127.0.0.1:PORT to localhost:PORT.
package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcr "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Server is a running registry.
type Server struct {
	// Host is host:port, 127.0.0.1:PORT: model references name it (Host/library/tiny:latest).
	Host string
	srv  *http.Server

	mu sync.Mutex
	// blobGets counts the blob GETs served, by repository.
	blobGets map[string]int
}

// Start serves a registry on 127.0.0.1 at a free port, keeping blobs in dir (in memory when dir is empty).
func Start(dir string) (*Server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	opts := []ggcr.Option{ggcr.Logger(log.New(io.Discard, "", 0))}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			ln.Close()
			return nil, err
		}
		opts = append(opts, ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(dir)))
	}
	s := &Server{Host: ln.Addr().String(), blobGets: map[string]int{}}
	s.srv = &http.Server{Handler: s.counted(realistic(ggcr.New(opts...))), ReadHeaderTimeout: 10 * time.Second}
	go s.srv.Serve(ln)
	return s, nil
}

// Close stops the server: requests under way get two seconds to finish, then every connection is closed (a task
// stopped in the middle of a pull may leave one that never finishes).
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := s.srv.Shutdown(ctx)
	if errors.Is(err, context.DeadlineExceeded) {
		return s.srv.Close()
	}
	return err
}

// BlobGets is how many blob GETs (ranged or whole, after the redirect) the registry has served from repository
// (e.g. "library/tinyllama"): what shows whether a task pulled its model.
func (s *Server) BlobGets(repository string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.blobGets[repository]
}

func (s *Server) counted(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if repo, _, ok := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/sha256:"); ok && r.Method == http.MethodGet &&
			!strings.HasPrefix(r.Host, "127.0.0.1:") {
			s.mu.Lock()
			s.blobGets[repo]++
			s.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}

// realistic makes the package answer as the real registries do: an upload's Location is absolute, and a blob GET
// on 127.0.0.1 is redirected to the same path on localhost (both loopback).
func realistic(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && strings.HasPrefix(r.Host, "127.0.0.1:") {
			u := *r.URL
			u.Scheme, u.Host = "http", "localhost:"+strings.TrimPrefix(r.Host, "127.0.0.1:")
			http.Redirect(w, r, u.String(), http.StatusTemporaryRedirect)
			return
		}
		next.ServeHTTP(&absoluteLocation{ResponseWriter: w, host: r.Host}, r)
	})
}

type absoluteLocation struct {
	http.ResponseWriter
	host string
}

func (a *absoluteLocation) WriteHeader(code int) {
	if loc := a.Header().Get("Location"); strings.HasPrefix(loc, "/") {
		a.Header().Set("Location", "http://"+a.host+loc)
	}
	a.ResponseWriter.WriteHeader(code)
}

// Layer is a blob of a manifest.
type Layer struct {
	MediaType string
	Data      []byte
}

// Push uploads layers and a manifest under repository:tag (e.g. "library/tiny", "latest") the way a registry
// client does (POST an upload, PUT its content by digest, PUT the manifest), for tests that need a model no Ollama
// would push: a lying size, a second model layer. Sizes may be overridden per layer index in sizes.
func (s *Server) Push(ctx context.Context, repository, tag string, layers []Layer, sizes map[int]int64) error {
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int64  `json:"size"`
	}
	config := []byte(`{"model_format":"gguf","model_family":"llama"}`)
	put := func(data []byte) (desc, error) {
		d := desc{Digest: digest(data), Size: int64(len(data))}
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+s.Host+"/v2/"+repository+"/blobs/uploads/", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return d, err
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusAccepted || loc == "" {
			return d, fmt.Errorf("start upload: %s", resp.Status)
		}
		sep := "?"
		if strings.Contains(loc, "?") {
			sep = "&"
		}
		req, _ = http.NewRequestWithContext(ctx, http.MethodPut, loc+sep+"digest="+d.Digest, strings.NewReader(string(data)))
		req.Header.Set("Content-Type", "application/octet-stream")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			return d, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			return d, fmt.Errorf("upload %s: %s", d.Digest, resp.Status)
		}
		return d, nil
	}
	cfg, err := put(config)
	if err != nil {
		return err
	}
	cfg.MediaType = "application/vnd.docker.container.image.v1+json"
	manifest := struct {
		SchemaVersion int    `json:"schemaVersion"`
		MediaType     string `json:"mediaType"`
		Config        desc   `json:"config"`
		Layers        []desc `json:"layers"`
	}{SchemaVersion: 2, MediaType: "application/vnd.docker.distribution.manifest.v2+json", Config: cfg, Layers: []desc{}}
	for i, l := range layers {
		d, err := put(l.Data)
		if err != nil {
			return err
		}
		d.MediaType = l.MediaType
		if n, ok := sizes[i]; ok {
			d.Size = n
		}
		manifest.Layers = append(manifest.Layers, d)
	}
	body, _ := json.Marshal(manifest)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+s.Host+"/v2/"+repository+"/manifests/"+tag, strings.NewReader(string(body)))
	req.Header.Set("Content-Type", manifest.MediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return errors.New("put manifest: " + resp.Status)
	}
	return nil
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// PushOllamaImage puts the local stand-in for the pinned Ollama image at HOST/ollama/ollama:VERSION and returns its
// name: an image of no layers whose configuration is the real image's (its environment, port and entry point).
// A local task runs the host's ollama binary, so the stand-in carries none; the model images built on it add the
// one layer that matters locally, the model.
func (s *Server) PushOllamaImage(ctx context.Context, version string) (string, error) {
	ref := s.Host + "/ollama/ollama:" + version
	tag, err := name.NewTag(ref, name.Insecure)
	if err != nil {
		return "", err
	}
	img, err := mutate.Config(empty.Image, v1.Config{
		Env:          []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "OLLAMA_HOST=0.0.0.0:11434"},
		Entrypoint:   []string{"/bin/ollama"},
		Cmd:          []string{"serve"},
		ExposedPorts: map[string]struct{}{"11434/tcp": {}},
		Labels:       map[string]string{"org.opencontainers.image.version": version, "ollama-ecs.local": "stand-in: runs the host's ollama"},
	})
	if err != nil {
		return "", err
	}
	if err := remote.Write(tag, img, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	return ref, nil
}
