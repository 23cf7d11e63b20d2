//go:build windows

package main

import (
	"path/filepath"
	"strings"
)

// sameFileSystem reports whether a and b are on one volume (drive letter or
// UNC share), so that a rename between them works.
func sameFileSystem(a, b string) (bool, error) {
	return strings.EqualFold(filepath.VolumeName(a), filepath.VolumeName(b)), nil
}
