package ollama

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ollama/ollama/api"
	"github.com/ollama/ollama/types/model"
)

// PullStallTimeout bounds how long Pull waits without any progress from the
// server before giving up: a registry behind a dropping firewall would
// otherwise hold the pull until the server's own 30 s dial timeout or longer.
const PullStallTimeout = 20 * time.Second

// ModelError reports a failed model operation against an Ollama server.
type ModelError struct {
	Op     string // "create", "load" or "pull"
	Model  string // the model name
	Status string // the last progress status the server sent, if any
	Err    error
}

func (e *ModelError) Error() string {
	msg := fmt.Sprintf("ollama %s %s", e.Op, e.Model)
	if e.Status != "" {
		msg += fmt.Sprintf(" (last status %q)", e.Status)
	}
	return msg + ": " + e.Err.Error()
}

func (e *ModelError) Unwrap() error { return e.Err }

// ErrRegistryUnreachable is matched (errors.Is) by a Pull error whose cause is
// that the server could not connect to the model registry, e.g. because the
// machine is offline. Local mode without internet must create models from
// GGUF files instead.
var ErrRegistryUnreachable = errors.New("model registry unreachable")

// registryUnreachableError keeps the server's message and adds the sentinel.
type registryUnreachableError struct{ msg string }

func (e *registryUnreachableError) Error() string {
	return ErrRegistryUnreachable.Error() + ": " + e.msg +
		" (without internet access, create the model from a GGUF file instead of pulling it)"
}

func (e *registryUnreachableError) Is(target error) bool { return target == ErrRegistryUnreachable }

// CreateFromGGUF uploads the GGUF file at ggufPath as a blob (/api/blobs) and
// creates model name from it (/api/create with Files), as `ollama create`
// does for a Modelfile whose FROM is a local GGUF.
func CreateFromGGUF(ctx context.Context, client *api.Client, name, ggufPath string) error {
	fail := func(status string, err error) error {
		return &ModelError{Op: "create", Model: name, Status: status, Err: err}
	}
	f, err := os.Open(ggufPath)
	if err != nil {
		return fail("", err)
	}
	defer f.Close()

	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fail("", fmt.Errorf("hash %s: %w", ggufPath, err))
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fail("", err)
	}
	if err := client.CreateBlob(ctx, digest, f); err != nil {
		return fail("", fmt.Errorf("upload blob %s: %w", digest, err))
	}

	// The server decides the format from the file name's extension first.
	fileName := filepath.Base(ggufPath)
	if !strings.HasSuffix(fileName, ".gguf") {
		fileName += ".gguf"
	}
	var last string
	err = client.Create(ctx, &api.CreateRequest{
		Model: name,
		Files: map[string]string{fileName: digest},
	}, func(p api.ProgressResponse) error {
		last = p.Status
		return nil
	})
	if err != nil {
		return fail(last, err)
	}
	if last != "success" {
		return fail(last, errors.New("server ended the stream without reporting success"))
	}
	return nil
}

// Load makes the server load model name into memory and keep it there
// (keep_alive -1), as the container's start does: a generate request with no
// prompt loads a model without generating, which is how `ollama run`
// preloads; an embedding model cannot generate, so it is loaded by embedding
// a word. Afterwards /api/ps lists the model, which is what health polling
// waits for.
func Load(ctx context.Context, client *api.Client, name string) error {
	forever := &api.Duration{Duration: -1}
	show, err := client.Show(ctx, &api.ShowRequest{Model: name})
	if err != nil {
		return &ModelError{Op: "load", Model: name, Err: err}
	}
	if slices.Contains(show.Capabilities, model.CapabilityEmbedding) && !slices.Contains(show.Capabilities, model.CapabilityCompletion) {
		if _, err := client.Embed(ctx, &api.EmbedRequest{Model: name, Input: "load", KeepAlive: forever}); err != nil {
			return &ModelError{Op: "load", Model: name, Err: err}
		}
		return nil
	}
	var final *api.GenerateResponse
	err = client.Generate(ctx, &api.GenerateRequest{
		Model:     name,
		KeepAlive: forever,
	}, func(r api.GenerateResponse) error {
		if r.Done {
			final = &r
		}
		return nil
	})
	if err != nil {
		return &ModelError{Op: "load", Model: name, Err: err}
	}
	if final == nil {
		return &ModelError{Op: "load", Model: name, Err: errors.New("server ended the stream without done")}
	}
	return nil
}

// PushInsecure makes the server push model name to its registry over plain HTTP, as `ollama push --insecure`
// does: name carries the registry host (127.0.0.1:PORT/library/tiny:latest), a registry run on this machine.
func PushInsecure(ctx context.Context, client *api.Client, name string) error {
	var last string
	err := client.Push(ctx, &api.PushRequest{Model: name, Insecure: true}, func(p api.ProgressResponse) error {
		last = p.Status
		return nil
	})
	switch {
	case err != nil:
		return &ModelError{Op: "push", Model: name, Status: last, Err: err}
	case last != "success":
		return &ModelError{Op: "push", Model: name, Status: last, Err: errors.New("server ended the stream without reporting success")}
	}
	return nil
}

// Pull makes the server download model name from its registry. It fails fast
// with an error matching ErrRegistryUnreachable when the server cannot
// connect to the registry, and gives up after PullStallTimeout without
// progress; ctx bounds the whole pull.
func Pull(ctx context.Context, client *api.Client, name string) error {
	return pull(ctx, client, &api.PullRequest{Model: name}, PullStallTimeout)
}

// PullInsecure is Pull over plain HTTP, for a registry you run yourself on
// this machine (a name like "127.0.0.1:5000/library/tiny:latest").
func PullInsecure(ctx context.Context, client *api.Client, name string) error {
	return pull(ctx, client, &api.PullRequest{Model: name, Insecure: true}, PullStallTimeout)
}

func pull(ctx context.Context, client *api.Client, req *api.PullRequest, stall time.Duration) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	errStalled := fmt.Errorf("no progress for %s", stall)
	watchdog := time.AfterFunc(stall, func() { cancel(errStalled) })
	defer watchdog.Stop()

	var last string
	err := client.Pull(ctx, req, func(p api.ProgressResponse) error {
		watchdog.Reset(stall)
		last = p.Status
		return nil
	})
	switch {
	case err == nil && last != "success":
		err = errors.New("server ended the stream without reporting success")
	case err != nil && context.Cause(ctx) == errStalled:
		err = errStalled
	case err != nil && ctx.Err() == nil && isUnreachable(err.Error()):
		err = &registryUnreachableError{msg: err.Error()}
	}
	if err != nil {
		return &ModelError{Op: "pull", Model: req.Model, Status: last, Err: err}
	}
	return nil
}

// isUnreachable reports whether a server-side pull error (which reaches us as
// text) says the registry could not be connected to.
func isUnreachable(msg string) bool {
	for _, s := range []string{
		"connection refused",
		"no such host",
		"network is unreachable",
		"no route to host",
		"i/o timeout",
		"proxyconnect",
		"server misbehaving",
		"dial tcp",
	} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}
