//go:build unix

package folderlock

import (
	"errors"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

var errWouldBlock = unix.EWOULDBLOCK

// openLockFile opens or creates the lock file without following a symlink
// planted in its place, and without blocking on a FIFO.
func openLockFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return regularFile(fd, path)
}

// openExistingLockFile opens the lock file only if it exists, for reading
// (a lock file of another user may be readable only), again without
// following a symlink or blocking on a FIFO.
func openExistingLockFile(path string) (*os.File, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return regularFile(fd, path)
}

// regularFile returns fd as a file if it is a regular file, else closes it.
func regularFile(fd int, path string) (*os.File, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		unix.Close(fd)
		return nil, &os.PathError{Op: "open", Path: path, Err: errors.New("not a regular file")}
	}
	return os.NewFile(uintptr(fd), path), nil
}

// tryLock takes an exclusive flock without waiting. On Linux, NFS clients
// turn flock into a whole-file byte-range lock that the server sees, so two
// hosts on one export exclude each other; SMB mounts map it to a share lock.
func tryLock(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

func unlock(f *os.File) error { return unix.Flock(int(f.Fd()), unix.LOCK_UN) }

func isReadOnly(err error) bool { return errors.Is(err, syscall.EROFS) }

func isNotSupported(err error) bool {
	return errors.Is(err, unix.ENOLCK) || errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS)
}
