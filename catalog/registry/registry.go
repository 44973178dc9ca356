// Package registry resolves any Ollama model reference against its registry: the manifest gives the model layer's
// digest and size, ranged reads of that blob's GGUF header (through catalog/gguf's guarded decoder) give the
// architecture the planner sizes from, and the result is cached by the layer's digest. It speaks the registry
// HTTP API (OCI distribution) that registry.ollama.ai, a private mirror and a local registry all answer.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ollama-ecs/ollama-ecs/catalog"
	"github.com/ollama-ecs/ollama-ecs/catalog/gguf"
)

// DefaultHost is Ollama's public registry, which a reference naming no host resolves against.
const DefaultHost = "registry.ollama.ai"

// Media types of an Ollama manifest's layers.
const (
	MediaModel     = "application/vnd.ollama.image.model"
	MediaProjector = "application/vnd.ollama.image.projector"
	MediaAdapter   = "application/vnd.ollama.image.adapter"
)

// Reference is a model reference: host/namespace/repository:tag.
type Reference struct {
	Host, Namespace, Repository, Tag string
}

var (
	namePart = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,79}$`)
	hostPart = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?)*(:[0-9]{1,5})?$`)
)

// Parse reads name[:tag], namespace/name[:tag] or host/namespace/name[:tag]; a missing host is defaultHost, a
// missing namespace "library", a missing tag "latest".
func Parse(s, defaultHost string) (Reference, error) {
	r := Reference{Host: defaultHost, Namespace: "library", Tag: "latest"}
	parts := strings.Split(strings.TrimSpace(s), "/")
	last := parts[len(parts)-1]
	if name, tag, ok := strings.Cut(last, ":"); ok {
		last, r.Tag = name, tag
	}
	switch len(parts) {
	case 1:
		r.Repository = last
	case 2:
		r.Namespace, r.Repository = parts[0], last
	case 3:
		r.Host, r.Namespace, r.Repository = parts[0], parts[1], last
	default:
		return r, fmt.Errorf("model reference %q has %d parts: want name[:tag], namespace/name[:tag] or host/namespace/name[:tag]", s, len(parts))
	}
	switch {
	case !hostPart.MatchString(r.Host):
		return r, fmt.Errorf("model reference %q: %q is not a registry host", s, r.Host)
	case !namePart.MatchString(r.Namespace) || !namePart.MatchString(r.Repository):
		return r, fmt.Errorf("model reference %q: names are 1-80 of a-z, 0-9, '.', '_' and '-'", s)
	case !namePart.MatchString(r.Tag):
		return r, fmt.Errorf("model reference %q: tag %q is not 1-80 of a-z, 0-9, '.', '_' and '-'", s, r.Tag)
	}
	r.Namespace, r.Repository = strings.ToLower(r.Namespace), strings.ToLower(r.Repository)
	return r, nil
}

// String is the full reference, host/namespace/repository:tag.
func (r Reference) String() string {
	return r.Host + "/" + r.Namespace + "/" + r.Repository + ":" + r.Tag
}

// Short is the name Ollama shows for it: repository:tag for the default registry's library, namespace/repository:tag
// for its other namespaces, the full reference elsewhere.
func (r Reference) Short() string {
	switch {
	case r.Host != DefaultHost:
		return r.String()
	case r.Namespace == "library":
		return r.Repository + ":" + r.Tag
	}
	return r.Namespace + "/" + r.Repository + ":" + r.Tag
}

// Layer is one entry of a manifest.
type Layer struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

// Manifest is the part of an image manifest a model is sized from.
type Manifest struct {
	SchemaVersion int     `json:"schemaVersion"`
	MediaType     string  `json:"mediaType"`
	Config        Layer   `json:"config"`
	Layers        []Layer `json:"layers"`
}

// Resolved is a reference resolved and sized.
type Resolved struct {
	Ref Reference
	// Model is the planner's model: named Ref.Short(), sized from the model layer's header, its SizeBytes the
	// model layer plus any projector and adapter layers (they load beside it).
	Model catalog.Model
	// Digest is the model layer's digest, the cache key.
	Digest string
	// Layers are the manifest's layers.
	Layers []Layer
	// HeaderBytes is what was read of the model layer to size it (0 when it came from the cache).
	HeaderBytes int64
	// Cached is true when the sizing came from the cache.
	Cached bool
}

// NotFoundError is a reference the registry does not have.
type NotFoundError struct{ Ref Reference }

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("%s has no model %s:%s (404)", e.Ref.Host, e.Ref.Namespace+"/"+e.Ref.Repository, e.Ref.Tag)
}

// RegistryError is a registry that did not answer usefully: the network, a timeout, 429 or 5xx after retries. (Its
// name is what the state machine's history shows.)
type RegistryError struct {
	Host string
	Err  error
}

func (e *RegistryError) Error() string {
	return fmt.Sprintf("registry %s could not be reached: %v", e.Host, e.Err)
}

func (e *RegistryError) Unwrap() error { return e.Err }

// BadModelError is a manifest or blob that cannot be deployed as it is: sizes that lie, a digest mismatch, no
// model layer, several, or a header that is not a usable GGUF.
type BadModelError struct {
	Ref    Reference
	Reason string
}

func (e *BadModelError) Error() string {
	return fmt.Sprintf("%s cannot be deployed: %s", e.Ref, e.Reason)
}

// Cache keeps sized models by their model layer's digest.
type Cache interface {
	Get(digest string) (catalog.Model, bool)
	Put(digest string, m catalog.Model)
}

// Client resolves references.
type Client struct {
	// HTTP is the client (nil: one with a 30-second timeout per request).
	HTTP *http.Client
	// Host is the registry a reference naming none resolves against (DefaultHost, or a private mirror).
	Host string
	// PlainHTTP lists hosts spoken to over http rather than https (a local registry).
	PlainHTTP func(host string) bool
	// Cache, when set, keeps sized models by digest.
	Cache Cache
	// Attempts is how often a request that fails for the network, 429 or 5xx is tried (default 3), Backoff the
	// first wait between tries (default 500 ms, doubling, or the registry's Retry-After up to 10 s).
	Attempts int
	Backoff  time.Duration
}

// ResolveTimeout bounds one Resolve: the manifest, the header's blocks and their retries.
const ResolveTimeout = 40 * time.Second

// maxManifestBytes bounds a manifest read: real ones are a few hundred bytes.
const maxManifestBytes = 1 << 20

// Resolve parses a reference, reads its manifest and sizes its model layer from the GGUF header.
func (c *Client) Resolve(ctx context.Context, ref string) (Resolved, error) {
	r, err := Parse(ref, c.host())
	if err != nil {
		return Resolved{}, err
	}
	// A registry that hangs must end in a RegistryError well within the validate function's minute.
	ctx, cancel := context.WithTimeout(ctx, ResolveTimeout)
	defer cancel()
	m, _, err := c.manifest(ctx, r)
	if err != nil {
		return Resolved{}, err
	}
	res := Resolved{Ref: r, Layers: m.Layers}
	var model *Layer
	var extra int64
	for i, l := range m.Layers {
		if l.Size < 0 || !strings.HasPrefix(l.Digest, "sha256:") || len(l.Digest) != 71 {
			return Resolved{}, &BadModelError{Ref: r, Reason: fmt.Sprintf("layer %d has digest %q and size %d", i, l.Digest, l.Size)}
		}
		switch l.MediaType {
		case MediaModel:
			if model != nil {
				return Resolved{}, &BadModelError{Ref: r, Reason: "its model is split over several model layers, which is not supported"}
			}
			model = &m.Layers[i]
		case MediaProjector, MediaAdapter:
			// A vision projector or an adapter loads beside the model: its bytes count toward the weights.
			extra += l.Size
		}
	}
	if model == nil {
		return Resolved{}, &BadModelError{Ref: r, Reason: "its manifest has no " + MediaModel + " layer"}
	}
	res.Digest = model.Digest
	if c.Cache != nil {
		if cached, ok := c.Cache.Get(model.Digest); ok {
			// The cache holds the size the registry served for this digest: a manifest must agree with it.
			if cached.SizeBytes != model.Size {
				return Resolved{}, &BadModelError{Ref: r, Reason: fmt.Sprintf(
					"the manifest says its model layer has %d bytes; the registry serves %d", model.Size, cached.SizeBytes)}
			}
			cached.Name, cached.SizeBytes = r.Short(), model.Size+extra
			res.Model, res.Cached = cached, true
			return res, nil
		}
	}
	fetch, total := c.blobFetch(r, model.Digest)
	sized, read, err := gguf.ReadModel(ctx, fetch, model.Size, r.Short())
	res.HeaderBytes = read
	var bad *gguf.HeaderError
	switch {
	case errors.As(err, &bad):
		return res, &BadModelError{Ref: r, Reason: "its model layer is not a usable GGUF: " + bad.Reason}
	case err != nil:
		return res, err
	case *total != model.Size:
		return res, &BadModelError{Ref: r, Reason: fmt.Sprintf("the manifest says its model layer has %d bytes; the registry serves %d", model.Size, *total)}
	}
	if c.Cache != nil {
		c.Cache.Put(model.Digest, sized)
	}
	sized.SizeBytes += extra
	res.Model = sized
	return res, nil
}

func (c *Client) host() string {
	if c.Host == "" {
		return DefaultHost
	}
	return c.Host
}

func (c *Client) url(r Reference, kind, id string) string {
	scheme := "https"
	if c.PlainHTTP != nil && c.PlainHTTP(r.Host) {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/%s/%s/%s", scheme, r.Host, r.Namespace, r.Repository, kind, id)
}

// Manifest parses a reference and fetches its manifest, decoded and as the registry stored it.
func (c *Client) Manifest(ctx context.Context, ref string) (Manifest, []byte, Reference, error) {
	r, err := Parse(ref, c.host())
	if err != nil {
		return Manifest{}, nil, r, err
	}
	m, raw, err := c.manifest(ctx, r)
	return m, raw, r, err
}

// OpenBlob opens a whole blob for streaming, following the registry's redirect: no timeout on the body (a model
// takes minutes), the context bounds it.
func (c *Client) OpenBlob(ctx context.Context, r Reference, digest string) (io.ReadCloser, error) {
	streaming := *c
	hc := &http.Client{}
	if c.HTTP != nil {
		hc.Transport = c.HTTP.Transport
	}
	streaming.HTTP = hc
	resp, err := streaming.do(ctx, r, "blobs", http.MethodGet, c.url(r, "blobs", digest), nil)
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// manifest fetches and decodes a reference's manifest, and returns it as the registry stored it too.
func (c *Client) manifest(ctx context.Context, r Reference) (Manifest, []byte, error) {
	var m Manifest
	resp, err := c.do(ctx, r, "manifests", http.MethodGet, c.url(r, "manifests", r.Tag), map[string]string{
		"Accept": "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
	})
	if err != nil {
		return m, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return m, nil, &RegistryError{Host: r.Host, Err: err}
	}
	if len(body) > maxManifestBytes {
		return m, nil, &BadModelError{Ref: r, Reason: "its manifest is larger than 1 MiB"}
	}
	if want := resp.Header.Get("Docker-Content-Digest"); want != "" && want != digestOf(body) {
		return m, nil, &BadModelError{Ref: r, Reason: fmt.Sprintf("its manifest's digest is %s, the registry says %s", digestOf(body), want)}
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return m, nil, &BadModelError{Ref: r, Reason: "its manifest is not JSON: " + err.Error()}
	}
	if m.SchemaVersion != 2 {
		return m, nil, &BadModelError{Ref: r, Reason: fmt.Sprintf("manifest schema version %d (want 2)", m.SchemaVersion)}
	}
	return m, body, nil
}

// blobFetch reads byte ranges of a blob, following the registry's redirect (to a CDN, to S3), and records the
// blob's total size the registry reports.
func (c *Client) blobFetch(r Reference, digest string) (gguf.Fetch, *int64) {
	total := new(int64)
	*total = -1
	fetch := func(ctx context.Context, start, end int64) ([]byte, error) {
		resp, err := c.do(ctx, r, "blobs", http.MethodGet, c.url(r, "blobs", digest), map[string]string{
			"Range": fmt.Sprintf("bytes=%d-%d", start, end),
		})
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusPartialContent:
			// Content-Range: bytes START-END/TOTAL
			if _, size, ok := strings.Cut(resp.Header.Get("Content-Range"), "/"); ok {
				if n, err := strconv.ParseInt(size, 10, 64); err == nil {
					*total = n
				}
			}
		case http.StatusOK:
			// A server that ignores Range sends the whole blob: read only the block.
			*total = resp.ContentLength
			if start > 0 {
				if _, err := io.CopyN(io.Discard, resp.Body, start); err != nil {
					return nil, &RegistryError{Host: r.Host, Err: err}
				}
			}
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, end-start+1))
		if err != nil {
			return nil, &RegistryError{Host: r.Host, Err: err}
		}
		return b, nil
	}
	return fetch, total
}

// do sends a request, trying again after a network error, 429 or 5xx; a manifest's 404 is a NotFoundError, a
// blob's a BadModelError, 401 and 403 a RegistryError, another status a BadModelError.
func (c *Client) do(ctx context.Context, r Reference, kind, method, url string, header map[string]string) (*http.Response, error) {
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	attempts, wait := max(c.Attempts, 1), c.Backoff
	if c.Attempts == 0 {
		attempts = 3
	}
	if wait == 0 {
		wait = 500 * time.Millisecond
	}
	var last error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return nil, &RegistryError{Host: r.Host, Err: ctx.Err()}
			case <-time.After(wait):
			}
			wait *= 2
		}
		req, err := http.NewRequestWithContext(ctx, method, url, nil)
		if err != nil {
			return nil, err
		}
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := hc.Do(req)
		if err != nil {
			last = err
			var dns *net.DNSError
			if errors.As(err, &dns) && dns.IsNotFound {
				break // a host that does not exist will not exist on the next try
			}
			continue
		}
		switch {
		case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusPartialContent:
			return resp, nil
		case resp.StatusCode == http.StatusNotFound && kind == "manifests":
			resp.Body.Close()
			return nil, &NotFoundError{Ref: r}
		case resp.StatusCode == http.StatusNotFound:
			resp.Body.Close()
			return nil, &BadModelError{Ref: r, Reason: "its manifest names a blob the registry does not have (404)"}
		case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
			resp.Body.Close()
			return nil, &RegistryError{Host: r.Host, Err: fmt.Errorf("%s refused access (%s): a registry that needs credentials is not supported", r.Host, resp.Status)}
		case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
			last = fmt.Errorf("%s %s: %s", method, url, resp.Status)
			if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 {
				wait = min(time.Duration(s)*time.Second, 10*time.Second)
			}
			resp.Body.Close()
			continue
		default:
			resp.Body.Close()
			return nil, &BadModelError{Ref: r, Reason: fmt.Sprintf("%s %s answered %s", method, url, resp.Status)}
		}
	}
	return nil, &RegistryError{Host: r.Host, Err: last}
}
