// Package folderlock keeps two gcingest agents off one drop folder.
//
// Each agent holds an advisory lock on a hidden file in every folder it
// watches. The state file's own lock guards one state path only: two hosts
// watching one share, or two configs on one host with different state files,
// would otherwise both upload every image. The lock is taken with the
// operating system's file locking (flock on Unix, LockFileEx on Windows), so
// it is released by the kernel when the process dies, however it dies; the
// file is left in place and only says who held it last.
//
// Where the folder cannot hold a lock file (a read-only share), or the file
// system does not support locks, Acquire returns ErrUnsupported and the
// caller decides how to go on.
package folderlock

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Name is the lock file's name in a watched folder. It starts with a dot, so
// the grouper never takes it for an image.
const Name = ".gcingest.lock"

// ErrUnsupported means the folder cannot hold the lock: it is read-only, or
// its file system refuses locks. No other agent is known to hold it.
var ErrUnsupported = errors.New("folder lock not supported here")

// HeldError says that another process holds a folder's lock.
type HeldError struct {
	Dir   string // the watched folder
	Owner string // what the holder wrote into the lock file (host, pid, state path), if readable
}

func (e *HeldError) Error() string {
	msg := fmt.Sprintf("drop folder %s is watched by another gcingest", e.Dir)
	if e.Owner != "" {
		msg += " (" + e.Owner + ")"
	}
	return msg + "; two agents on one folder would upload every image twice"
}

// Lock is a held folder lock. Release it with Close.
type Lock struct {
	f   *os.File
	dir string
}

// Acquire takes the lock of dir without waiting. owner is written into the
// lock file for whoever finds it held (for example "host scanner1, pid 42,
// state /var/lib/gcingest/state.db"); it must not hold secrets.
func Acquire(dir, owner string) (*Lock, error) {
	path := filepath.Join(dir, Name)
	f, err := openLockFile(path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) || isReadOnly(err) {
			// A lock file another user made (an agent running as another
			// user, or on another host) may be held all the same: that
			// agent is named rather than the folder called unlockable.
			if herr := Holder(dir); errors.As(herr, new(*HeldError)) {
				return nil, herr
			}
			return nil, fmt.Errorf("lock %s: %w: %w", path, ErrUnsupported, err)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if err := tryLock(f); err != nil {
		if errors.Is(err, errWouldBlock) {
			held := &HeldError{Dir: dir, Owner: readOwner(f)}
			f.Close()
			return nil, held
		}
		f.Close()
		if isNotSupported(err) {
			return nil, fmt.Errorf("lock %s: %w: %w", path, ErrUnsupported, err)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	// Who holds it, for the other agent's message. A failure here leaves the
	// lock held and only the message poorer.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(owner+", since "+time.Now().UTC().Format(time.RFC3339)+"\n"), 0)
	}
	return &Lock{f: f, dir: dir}, nil
}

// Holder reports whether another process holds dir's lock now, changing
// nothing: the lock file is not created (a folder without one is held by
// nobody) and a lock taken to find out is released at once. It is what
// `gcingest check` asks before run would call Acquire: a *HeldError when
// another process holds the lock, nil when nobody does, and an error
// wrapping ErrUnsupported when the file system refuses locks. A process
// that holds the lock itself gets a *HeldError too: a lock is held per
// open file, so to this call its own lock is another's.
func Holder(dir string) error {
	path := filepath.Join(dir, Name)
	f, err := openExistingLockFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read lock %s: %w", path, err)
	}
	defer f.Close()
	if err := tryLock(f); err != nil {
		if errors.Is(err, errWouldBlock) {
			return &HeldError{Dir: dir, Owner: readOwner(f)}
		}
		if isNotSupported(err) {
			return fmt.Errorf("read lock %s: %w: %w", path, ErrUnsupported, err)
		}
		return fmt.Errorf("read lock %s: %w", path, err)
	}
	if err := unlock(f); err != nil {
		return fmt.Errorf("release lock %s: %w", path, err)
	}
	return nil
}

// Close releases the lock. The file stays: removing it would race with an
// agent that just opened it.
func (l *Lock) Close() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := unlock(l.f)
	if cerr := l.f.Close(); err == nil {
		err = cerr
	}
	l.f = nil
	return err
}

// readOwner reads the holder's description, a short line at most.
func readOwner(f *os.File) string {
	b, err := io.ReadAll(io.LimitReader(io.NewSectionReader(f, 0, 512), 512))
	if err != nil {
		return ""
	}
	s := strings.TrimSpace(string(b))
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
}
