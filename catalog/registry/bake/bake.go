// Package bake builds a model's image without a Docker daemon: a base image (Ollama's) plus one layer holding the
// model in Ollama's on-disk layout, streamed from the model's registry to the image registry. It is its own
// package so that only the builder links go-containerregistry's client, not every function that resolves models.
package bake

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/stream"

	"github.com/ollama-ecs/ollama-ecs/catalog/registry"
)

// BakedModelsDir is where a model image keeps its models, in Ollama's on-disk layout (manifests/ and blobs/): not
// under /root/.ollama, which the GPU instances' host cache is mounted over. The image's OLLAMA_MODELS points here.
const BakedModelsDir = "/ollama-models"

// Bake makes sure target holds an image of base plus one layer with the model ref in Ollama's on-disk layout, so a
// task of that image starts without pulling. It is built without a Docker daemon: the layer is a tar stream
// written while the model's blobs stream from the source registry to the target one, never held in memory or on
// disk. The tag goes on only once every blob and the manifest are in the target registry, so a build killed half
// way leaves nothing tagged; an existing tag is kept (a model's content is its digest, so two builds of it make
// the same image). It returns the image's digest and whether it was built now.
func Bake(ctx context.Context, c *registry.Client, ref string, base, target string, opts ...remote.Option) (string, bool, error) {
	m, raw, r, err := c.Manifest(ctx, ref)
	if err != nil {
		return "", false, err
	}
	return BakeManifest(ctx, c, r, raw, m, base, target, opts...)
}

// BakeManifest is Bake of a manifest already fetched (raw, decoded as m, of the reference r): the image holds
// exactly the model that manifest describes, even if the registry's tag moves meanwhile.
func BakeManifest(ctx context.Context, c *registry.Client, r registry.Reference, raw []byte, m registry.Manifest, base, target string, opts ...remote.Option) (string, bool, error) {
	dst, err := ParseReference(target)
	if err != nil {
		return "", false, fmt.Errorf("image tag %q: %w", target, err)
	}
	opts = append([]remote.Option{remote.WithContext(ctx)}, opts...)
	if d, err := remote.Head(dst, opts...); err == nil {
		return d.Digest.String(), false, nil
	} else if !isNotFound(err) {
		return "", false, &registry.RegistryError{Host: dst.Context().RegistryStr(), Err: err}
	}
	src, err := ParseReference(base)
	if err != nil {
		return "", false, fmt.Errorf("base image %q: %w", base, err)
	}
	img, err := remote.Image(src, opts...)
	if err != nil {
		return "", false, &registry.RegistryError{Host: src.Context().RegistryStr(), Err: fmt.Errorf("base image %s: %w", base, err)}
	}
	// The configuration is set on the base: a streamed layer's digest is known only once it has been uploaded.
	cfg, err := img.ConfigFile()
	if err != nil {
		return "", false, err
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Env = append(withoutEnv(cfg.Config.Env, "OLLAMA_MODELS"), "OLLAMA_MODELS="+BakedModelsDir)
	if cfg.Config.Labels == nil {
		cfg.Config.Labels = map[string]string{}
	}
	cfg.Config.Labels["ollama-ecs.model"] = r.String()
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return "", false, err
	}
	// Weights barely compress (a quantized model saves a few percent), so the layer is gzip of stored blocks: every
	// runtime reads it as the usual gzip layer, and neither the build nor a task's pull spends CPU deflating it.
	body := layoutStream(ctx, c, r, raw, m)
	defer body.Close()
	layer := stream.NewLayer(body, stream.WithCompressionLevel(gzip.NoCompression))
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		CreatedBy: "ollama-ecs: " + r.String() + " in Ollama's layout under " + BakedModelsDir}})
	if err != nil {
		return "", false, err
	}
	// remote.Write uploads the layers (the streamed one last computes its digest as it goes), the config, and
	// then the manifest under the tag.
	if err := remote.Write(dst, img, opts...); err != nil {
		body.Close() // ends the producer if the upload stopped reading
		if streamErr := body.wait(); streamErr != nil {
			return "", false, streamErr // the model's registry failed, not the image registry
		}
		return "", false, &registry.RegistryError{Host: dst.Context().RegistryStr(), Err: fmt.Errorf("writing %s: %w", dst, err)}
	}
	d, err := img.Digest()
	if err != nil {
		return "", false, err
	}
	return d.String(), true, nil
}

// ParseReference parses an image reference; a registry on the machine itself (the local stack's) is spoken to over
// plain HTTP.
func ParseReference(image string) (name.Reference, error) {
	if host, _, _ := strings.Cut(image, "/"); registry.Loopback(host) {
		return name.ParseReference(image, name.Insecure)
	}
	return name.ParseReference(image)
}

// Exists reports whether a registry holds image (a HEAD of its manifest; 404 is no).
func Exists(image string, opts ...remote.Option) (bool, error) {
	ref, err := ParseReference(image)
	if err != nil {
		return false, err
	}
	_, err = remote.Head(ref, opts...)
	if isNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// layoutStream writes the tar of Ollama's layout for one model: the manifest at manifests/HOST/NAMESPACE/REPO/TAG
// and each blob (the config and every layer) at blobs/sha256-HEX, each blob copied from the source registry as it
// is read and checked against its size and digest on the way. A failure ends the stream, and with it the upload;
// the stream's own error is kept (wait returns it), since the upload reports only that its body broke.
func layoutStream(ctx context.Context, c *registry.Client, r registry.Reference, manifest []byte, m registry.Manifest) *modelStream {
	pr, pw := io.Pipe()
	s := &modelStream{PipeReader: pr, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tw := tar.NewWriter(pw)
		dir := strings.TrimPrefix(BakedModelsDir, "/")
		file := func(name string, size int64, digest string, body io.Reader) error {
			if err := tw.WriteHeader(&tar.Header{Name: path.Join(dir, name), Mode: 0o644, Size: size, ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
				return err
			}
			h := sha256.New()
			src := &sourceReader{r: io.LimitReader(body, size)}
			n, err := io.Copy(io.MultiWriter(tw, h), src)
			switch {
			case err != nil && src.err == nil:
				return err // the upload stopped reading: its own error is the build's
			case err != nil:
				return &registry.RegistryError{Host: r.Host, Err: fmt.Errorf("reading %s: %w", name, err)}
			case n < size:
				return &registry.BadModelError{Ref: r, Reason: fmt.Sprintf("%s: the registry served %d bytes, the manifest says %d", name, n, size)}
			}
			if extra, _ := io.CopyN(io.Discard, body, 1); extra > 0 {
				return &registry.BadModelError{Ref: r, Reason: fmt.Sprintf("%s: the registry served more than the %d bytes the manifest says", name, size)}
			}
			if digest != "" && "sha256:"+hex.EncodeToString(h.Sum(nil)) != digest {
				return &registry.BadModelError{Ref: r, Reason: fmt.Sprintf("%s: its content does not match its digest", name)}
			}
			return nil
		}
		err := file(path.Join("manifests", r.Host, r.Namespace, r.Repository, r.Tag), int64(len(manifest)), "", strings.NewReader(string(manifest)))
		for _, l := range append([]registry.Layer{m.Config}, m.Layers...) {
			if err != nil {
				break
			}
			var body io.ReadCloser
			if body, err = c.OpenBlob(ctx, r, l.Digest); err == nil {
				err = file("blobs/"+strings.Replace(l.Digest, ":", "-", 1), l.Size, l.Digest, body)
				body.Close()
			}
		}
		if err == nil {
			err = tw.Close()
		}
		var model *registry.BadModelError
		var reg *registry.RegistryError
		if errors.As(err, &model) || errors.As(err, &reg) {
			s.err = err // the model's side; a write error is the upload's, which remote.Write reports
		}
		pw.CloseWithError(err)
	}()
	return s
}

// modelStream is the layer's body; wait, once the upload has returned (and the body is closed), is the stream's
// own error, if the model's registry failed it.
type modelStream struct {
	*io.PipeReader
	done chan struct{}
	err  error
}

func (s *modelStream) wait() error {
	<-s.done
	return s.err
}

// sourceReader keeps the error of the model registry's side of a copy.
type sourceReader struct {
	r   io.Reader
	err error
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if err != nil && err != io.EOF {
		s.err = err
	}
	return n, err
}

func isNotFound(err error) bool {
	var te *transport.Error
	return errors.As(err, &te) && te.StatusCode == http.StatusNotFound
}

func withoutEnv(env []string, key string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, key+"=") {
			out = append(out, kv)
		}
	}
	return out
}
