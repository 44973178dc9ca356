// Package cachedir names the folder where the slow one-time installs of local mode live (the Ollama build, the
// local Step Functions engine, the CDK CLI) and the local stack's pointer file: $OLLAMA_ECS_CACHE, else
// ollama-ecs under the user's cache folder ($XDG_CACHE_HOME or ~/.cache). It is outside any checkout, so the
// command works from any directory and a fresh clone on the same machine (CI's) reuses the builds. The scripts in
// scripts/ compute the same folder on Linux (scripts/cachedir.sh; os.UserCacheDir differs elsewhere, e.g. macOS).
package cachedir

import (
	"fmt"
	"os"
	"path/filepath"
)

// Env overrides the folder.
const Env = "OLLAMA_ECS_CACHE"

// Dir is the cache folder (not created).
func Dir() (string, error) {
	if d := os.Getenv(Env); d != "" {
		return filepath.Abs(d)
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache folder: set %s or HOME: %w", Env, err)
	}
	return filepath.Join(base, "ollama-ecs"), nil
}
