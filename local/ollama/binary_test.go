package ollama

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ollama-ecs/ollama-ecs/local/cachedir"
)

func TestFindRepoRootSkipsOtherModules(t *testing.T) {
	root := t.TempDir()
	write := func(rel, content string) {
		t.Helper()
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "// comment\nmodule "+ModulePath+"\n\ngo 1.26\n")
	write("infra/go.mod", "module example.com/infra\n")
	if err := os.MkdirAll(filepath.Join(root, "infra", "stacks"), 0o755); err != nil {
		t.Fatal(err)
	}

	got, err := FindRepoRoot(filepath.Join(root, "infra", "stacks"))
	if err != nil {
		t.Fatal(err)
	}
	if got != root {
		t.Fatalf("FindRepoRoot = %s, want %s", got, root)
	}

	if _, err := FindRepoRoot(filepath.Join(root, "..")); err == nil {
		t.Fatal("FindRepoRoot above the module: want an error")
	}
}

func TestRepoRootFromPackageDir(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "local", "ollama", "binary.go")); err != nil {
		t.Fatalf("RepoRoot = %s, which does not hold this package: %v", root, err)
	}
}

func TestFindBinary(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "ollama-exe")
	if err := os.WriteFile(exe, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	plain := filepath.Join(dir, "not-exe")
	if err := os.WriteFile(plain, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(cachedir.Env, t.TempDir())
	cached, err := CachedBinaryPath()
	if err != nil {
		t.Fatal(err)
	}

	t.Run("OLLAMA_BIN wins", func(t *testing.T) {
		t.Setenv(BinaryEnv, exe)
		if got, err := FindBinary(); err != nil || got != exe {
			t.Fatalf("FindBinary = %q, %v; want %q", got, err, exe)
		}
	})
	t.Run("OLLAMA_BIN not executable is an error", func(t *testing.T) {
		t.Setenv(BinaryEnv, plain)
		if _, err := FindBinary(); err == nil || !strings.Contains(err.Error(), BinaryEnv) {
			t.Fatalf("FindBinary = %v; want an error naming %s", err, BinaryEnv)
		}
	})
	t.Run("nothing found says make ollama", func(t *testing.T) {
		t.Setenv(BinaryEnv, "")
		t.Setenv("PATH", dir) // holds no "ollama"
		_, err := FindBinary()
		if !errors.Is(err, ErrBinaryNotFound) || !strings.Contains(err.Error(), "make ollama") || !strings.Contains(err.Error(), cached) {
			t.Fatalf("FindBinary = %v; want ErrBinaryNotFound mentioning `make ollama` and %s", err, cached)
		}
	})
	t.Run("cached build", func(t *testing.T) {
		t.Setenv(BinaryEnv, "")
		t.Setenv("PATH", dir)
		if err := os.MkdirAll(filepath.Dir(cached), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cached, []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		if got, err := FindBinary(); err != nil || got != cached {
			t.Fatalf("FindBinary = %q, %v; want %q", got, err, cached)
		}
	})
}

func TestParseProcStat(t *testing.T) {
	cases := []struct {
		in    string
		state byte
		pgrp  int
		ok    bool
	}{
		{"1234 (ollama) S 1 1234 1234 0 -1", 'S', 1234, true},
		{"99 (a) b (c)) Z 5 77 77", 'Z', 77, true},
		{"garbage", 0, 0, false},
	}
	for _, c := range cases {
		state, pgrp, ok := parseProcStat([]byte(c.in))
		if state != c.state || pgrp != c.pgrp || ok != c.ok {
			t.Errorf("parseProcStat(%q) = %q, %d, %v; want %q, %d, %v", c.in, state, pgrp, ok, c.state, c.pgrp, c.ok)
		}
	}
}
