//go:build !windows

package agent

import (
	"fmt"
	"os"
	"syscall"
)

// SameFileSystem reports whether a and b are on one file system (st_dev),
// so that a rename between them works.
func SameFileSystem(a, b string) (bool, error) {
	da, err := device(a)
	if err != nil {
		return false, err
	}
	db, err := device(b)
	if err != nil {
		return false, err
	}
	return da == db, nil
}

func device(p string) (uint64, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return 0, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no device number", p)
	}
	return uint64(st.Dev), nil
}
