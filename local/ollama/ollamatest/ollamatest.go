// Package ollamatest gives tests a real Ollama server with the project's
// missing-tool policy: without the binary a test fails under CI (CI is set)
// and is skipped elsewhere with the command that fixes it.
package ollamatest

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ollama-ecs/ollama-ecs/local/ollama"
	"github.com/ollama-ecs/ollama-ecs/test/tools"
)

// Binary returns the ollama binary (see ollama.FindBinary), or ends the test as tools.Require does.
func Binary(t testing.TB) string {
	t.Helper()
	tools.Require(t, tools.Ollama)
	bin, err := ollama.FindBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// Start starts a server with the binary from Binary (unless opts.Binary is
// set) and stops it when the test ends, failing the test if Stop reports
// anything left behind.
func Start(t testing.TB, opts ollama.Options) *ollama.Server {
	t.Helper()
	if opts.Binary == "" {
		opts.Binary = Binary(t)
	}
	if opts.Logger == nil {
		opts.Logger = Logger(t)
	}
	if opts.TempDir == "" {
		opts.TempDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	srv, err := ollama.Start(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := srv.Stop(ctx); err != nil {
			t.Errorf("stop %s: %v", srv, err)
		}
	})
	return srv
}

// Logger returns a logger that writes through t.Log, so server events show
// up with the test that caused them (and only with -v or on failure).
func Logger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
