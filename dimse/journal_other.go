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

// lowPriority runs the journal's background work at the usual priority:
// there is no journal here anyway.
type lowPriority struct{}

func startLowPriority() *lowPriority { return &lowPriority{} }
func (*lowPriority) do(f func())     { f() }
func (*lowPriority) stop()           {}
