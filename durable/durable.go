// Package durable writes files that must survive a crash or power loss:
// the bytes go to a temporary file beside the target, which is synced,
// renamed over the target, and the folder synced so that the rename itself
// is on disk (docs/PATTERNS.md, rule 5). A reader, and the next run after a
// crash, sees the old file or the new one, never a part of one.
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Write creates name with permissions perm from what write writes to the
// open temporary file, then syncs, renames and syncs the folder. On any
// error the temporary file is removed and name is left as it was.
func Write(name string, perm fs.FileMode, write func(f *os.File) error) (err error) {
	dir := filepath.Dir(name)
	f, err := os.CreateTemp(dir, "."+filepath.Base(name)+".*.tmp")
	if err != nil {
		return fmt.Errorf("create a temporary file for %s: %w", name, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("set the mode of %s: %w", tmp, err)
	}
	if err := write(f); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, name); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, name, err)
	}
	return SyncDir(dir)
}

// WriteFile writes data to name durably (see Write).
func WriteFile(name string, data []byte, perm fs.FileMode) error {
	return Write(name, perm, func(f *os.File) error {
		if _, err := f.Write(data); err != nil {
			return fmt.Errorf("write %s: %w", f.Name(), err)
		}
		return nil
	})
}

// SyncDir syncs the folder dir, so that the files just renamed into it (or
// out of it) stay renamed after a power loss. Windows cannot open a folder
// for syncing and needs no such sync: there it does nothing.
func SyncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open folder %s to sync it: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil && !errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("sync folder %s: %w", dir, err)
	}
	return nil
}
