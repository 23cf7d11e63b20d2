//go:build !windows

package ingest

import (
	"os"
	"syscall"
)

// openNoFollow opens name read-only, refusing a symbolic link (ELOOP) and
// not blocking on a FIFO.
func openNoFollow(name string) (*os.File, error) {
	return os.OpenFile(name, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}
