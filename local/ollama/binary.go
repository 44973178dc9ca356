// Package ollama runs real `ollama serve` processes for local mode and tests,
// and drives them through Ollama's own Go client.
//
// Local mode replaces each ECS task with an `ollama serve` on 127.0.0.1, so
// health polling, model creation and loading run against the real server, not
// a fake. Each Server gets a free port, its own models folder and HOME, and
// lives in its own process group so that stopping it leaves nothing behind.
package ollama

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/ollama-ecs/ollama-ecs/local/cachedir"
)

// Version is the Ollama release that `make ollama` builds and local mode is
// tested against.
const Version = "0.17.4"

// ModulePath is this repository's Go module; RepoRoot looks for its go.mod.
const ModulePath = "github.com/ollama-ecs/ollama-ecs"

// BinaryEnv names the environment variable that points at an ollama binary,
// overriding every other place.
const BinaryEnv = "OLLAMA_BIN"

// ErrBinaryNotFound is matched (errors.Is) by the error FindBinary returns when
// no ollama binary exists.
var ErrBinaryNotFound = errors.New("ollama binary not found")

// BinaryNotFoundError lists where FindBinary looked.
type BinaryNotFoundError struct {
	Searched []string // the places tried, in order
}

func (e *BinaryNotFoundError) Error() string {
	return fmt.Sprintf("%v (looked at %s): run `make ollama` to build v%s into the cache folder, or set %s",
		ErrBinaryNotFound, strings.Join(e.Searched, ", "), Version, BinaryEnv)
}

func (e *BinaryNotFoundError) Is(target error) bool { return target == ErrBinaryNotFound }

// CachedBinaryPath is where scripts/ollama.sh puts the binary it builds:
// ollama/v<Version>/ollama in the cache folder (see package cachedir).
func CachedBinaryPath() (string, error) {
	dir, err := cachedir.Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "ollama", "v"+Version, "ollama"), nil
}

// FindBinary returns the ollama binary to run: $OLLAMA_BIN if set, else
// `ollama` on PATH, else the one `make ollama` built into the cache folder. An
// OLLAMA_BIN that is set but not executable is an error rather than silently
// skipped, since whoever set it expects it to be used.
func FindBinary() (string, error) {
	if p := os.Getenv(BinaryEnv); p != "" {
		if err := checkExecutable(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", BinaryEnv, p, err)
		}
		return p, nil
	}
	searched := []string{"$" + BinaryEnv + " (unset)", "ollama on $PATH"}
	if p, err := exec.LookPath("ollama"); err == nil {
		return p, nil
	}
	if p, err := CachedBinaryPath(); err == nil {
		if checkExecutable(p) == nil {
			return p, nil
		}
		searched = append(searched, p)
	}
	return "", &BinaryNotFoundError{Searched: searched}
}

func checkExecutable(path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}

// RepoRoot walks up from the working directory to the folder whose go.mod
// declares ModulePath. Tests run in their package folder, so this is how they
// find the repository's files (the functions they build).
func RepoRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	return FindRepoRoot(wd)
}

// FindRepoRoot walks up from dir to the folder whose go.mod declares
// ModulePath. A go.mod of another module (infra/ has its own) is passed over.
func FindRepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repo root: %w", err)
	}
	for d := dir; ; {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && modulePath(data) == ModulePath {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("find repo root: no go.mod for module %s in %s or above", ModulePath, dir)
		}
		d = parent
	}
}

// modulePath returns the path on a go.mod's module line ("" if none). It is
// the few lines of golang.org/x/mod/modfile.ModulePath this package needs.
func modulePath(gomod []byte) string {
	for line := range strings.Lines(string(gomod)) {
		fields := strings.Fields(line)
		if len(fields) >= 2 && fields[0] == "module" {
			if p, err := strconv.Unquote(fields[1]); err == nil {
				return p
			}
			return fields[1]
		}
	}
	return ""
}
