//go:build windows

package agent

import (
	"path/filepath"
	"strings"
)

// SameFileSystem reports whether a and b are on one volume (drive letter or
// UNC share), so that a rename between them works.
func SameFileSystem(a, b string) (bool, error) {
	return strings.EqualFold(filepath.VolumeName(a), filepath.VolumeName(b)), nil
}
