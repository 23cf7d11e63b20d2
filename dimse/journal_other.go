//go:build !linux

package dimse

import (
	"errors"
	"fmt"
	"os"
)

// Elsewhere than Linux the journal is off and each instance is written
// directly (SpoolStore): fdatasync and flock are Linux's, and macOS's fsync
// does not even reach the disk.

func datasync(f *os.File) error { return f.Sync() }

func lockJournal(f *os.File) error {
	return fmt.Errorf("lock %s: %w", f.Name(), errors.ErrUnsupported)
}

func startWriteback(*os.File) {}
