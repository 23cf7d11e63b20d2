//go:build windows

package ingest

import (
	"fmt"
	"os"
)

// openNoFollow opens name read-only, refusing a symbolic link. Windows has
// no O_NOFOLLOW: the name is checked with Lstat and the opened file must
// be the one checked.
func openNoFollow(name string) (*os.File, error) {
	lfi, err := os.Lstat(name)
	if err != nil {
		return nil, err
	}
	if lfi.Mode()&os.ModeSymlink != 0 {
		return nil, fmt.Errorf("open %s: %w", name, errSymlink)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !os.SameFile(lfi, fi) {
		f.Close()
		return nil, fmt.Errorf("open %s: %w", name, errSymlink)
	}
	return f, nil
}

// fileIdent is empty on Windows: the content is hashed again instead.
func fileIdent(os.FileInfo) string { return "" }
