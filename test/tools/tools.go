// Package tools checks, for every test that needs them, the tools the end-to-end tests run: the pinned Ollama
// build, the local Step Functions engine (Node) and moto_server. Under CI a missing tool fails the test; elsewhere
// the test is skipped with the command that installs it, never silently.
package tools

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/local/engine"
	"github.com/ollama-ecs/ollama-ecs/local/ollama"
)

// Tool is one thing a test may need.
type Tool int

const (
	// Ollama is the pinned `ollama` build (make ollama).
	Ollama Tool = iota
	// Engine is the local Step Functions engine and its Node (make engine).
	Engine
	// Moto is moto_server on PATH (Python moto[server]).
	Moto
	// Chromium is Debian's chromium, for the console's browser test (scripts/chromium.sh, run by make tools).
	Chromium
)

// Local is what a local stack needs: Ollama and the engine.
var Local = []Tool{Ollama, Engine}

// Require fails (under CI) or skips (elsewhere, saying what to run) unless every tool is there.
func Require(t testing.TB, need ...Tool) {
	t.Helper()
	if err := Missing(need...); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("tools missing: %v", err)
		}
		t.Skipf("tools missing (run `make tools`; moto_server comes with Python's moto[server]): %v", err)
	}
}

// Missing says which of the tools are not installed, or nil.
func Missing(need ...Tool) error {
	var errs []error
	for _, tool := range need {
		switch tool {
		case Ollama:
			_, err := ollama.FindBinary()
			errs = append(errs, err)
		case Engine:
			dir, err := engine.DefaultDir()
			if err == nil {
				if _, serr := os.Stat(filepath.Join(dir, ".installed")); serr != nil {
					err = fmt.Errorf("the local engine is not installed in %s", dir)
				}
			}
			errs = append(errs, err)
		case Moto:
			if _, err := exec.LookPath("moto_server"); err != nil {
				errs = append(errs, fmt.Errorf("moto_server not found on PATH: %w", err))
			}
		case Chromium:
			_, err := ChromiumPath()
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ChromiumPath is the browser the console test drives: CHROMIUM_BIN, else chromium on PATH.
func ChromiumPath() (string, error) {
	if p := os.Getenv("CHROMIUM_BIN"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium not found (scripts/chromium.sh installs Debian's)")
}
