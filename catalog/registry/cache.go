package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	"github.com/ollama-ecs/ollama-ecs/catalog"
)

// DirCache keeps sized models as JSON files named by their digest in Dir: a layer's digest names its content, so an
// entry never goes stale. Failures to write are ignored (the next resolve sizes the model again).
type DirCache struct{ Dir string }

func (d DirCache) path(digest string) (string, bool) {
	hexPart, ok := strings.CutPrefix(digest, "sha256:")
	if !ok || len(hexPart) != 64 || strings.Trim(hexPart, "0123456789abcdef") != "" {
		return "", false
	}
	return filepath.Join(d.Dir, hexPart+".json"), true
}

// Get returns the model sized for a digest, if the cache has it.
func (d DirCache) Get(digest string) (catalog.Model, bool) {
	p, ok := d.path(digest)
	if !ok {
		return catalog.Model{}, false
	}
	raw, err := os.ReadFile(p)
	if err != nil {
		return catalog.Model{}, false
	}
	var m catalog.Model
	if json.Unmarshal(raw, &m) != nil || m.Validate() != nil {
		return catalog.Model{}, false
	}
	return m, true
}

// Put stores a sized model under its digest: written whole to a temporary file, then renamed into place.
func (d DirCache) Put(digest string, m catalog.Model) {
	p, ok := d.path(digest)
	if !ok || os.MkdirAll(d.Dir, 0o755) != nil {
		return
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return
	}
	f, err := os.CreateTemp(d.Dir, ".put-*")
	if err != nil {
		return
	}
	_, werr := f.Write(raw)
	if cerr := f.Close(); werr != nil || cerr != nil {
		os.Remove(f.Name())
		return
	}
	if os.Rename(f.Name(), p) != nil {
		os.Remove(f.Name())
	}
}

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}
