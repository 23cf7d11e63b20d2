//go:build windows

package folderlock

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

var errWouldBlock = windows.ERROR_LOCK_VIOLATION

func openLockFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
}

// openExistingLockFile opens the lock file only if it exists, for reading.
func openExistingLockFile(path string) (*os.File, error) {
	return os.Open(path)
}

// tryLock locks the file's first byte exclusively, without waiting; SMB
// shares carry the lock to other hosts.
func tryLock(f *os.File) error {
	var ol windows.Overlapped
	err := windows.LockFileEx(windows.Handle(f.Fd()), windows.LOCKFILE_EXCLUSIVE_LOCK|windows.LOCKFILE_FAIL_IMMEDIATELY, 0, 1, 0, &ol)
	if errors.Is(err, windows.ERROR_IO_PENDING) {
		return windows.ERROR_LOCK_VIOLATION
	}
	return err
}

func unlock(f *os.File) error {
	var ol windows.Overlapped
	return windows.UnlockFileEx(windows.Handle(f.Fd()), 0, 1, 0, &ol)
}

func isReadOnly(err error) bool { return errors.Is(err, windows.ERROR_WRITE_PROTECT) }

func isNotSupported(err error) bool { return errors.Is(err, windows.ERROR_NOT_SUPPORTED) }
