package prices

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// WriteFile replaces path with data atomically: the data goes to a temporary file in the same directory, is
// synced, then renamed over path, so a reader (or a failed write) never sees a partial file. The file keeps its
// permissions (0644 for a new file).
func WriteFile(path string, data []byte) (err error) {
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		mode = fi.Mode().Perm()
	} else if !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if _, err = tmp.Write(data); err != nil {
		return err
	}
	if err = tmp.Chmod(mode); err != nil {
		return err
	}
	if err = tmp.Sync(); err != nil {
		return err
	}
	if err = tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// UpdateFile refreshes the compute data file at path (see Refresh) and replaces it atomically. On any error the
// file is left exactly as it was.
func UpdateFile(ctx context.Context, c Clients, region, path string, now time.Time) (*Result, error) {
	current, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	res, err := Refresh(ctx, c, region, current, now)
	if err != nil {
		return nil, err
	}
	if err := WriteFile(path, res.JSON); err != nil {
		return nil, fmt.Errorf("writing %s: %w", path, err)
	}
	return res, nil
}
