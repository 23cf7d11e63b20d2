package dimse

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// datasync flushes f's data, and only the metadata needed to read it back
// (fdatasync): the journal overwrites blocks it already wrote, so there is
// no allocation to commit and the flush is one device write and cache
// flush, not a file system journal commit as fsync of a new file is.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("fdatasync %s: %w", f.Name(), err)
		}
		return nil
	}
}

// lockJournal takes an exclusive lock on the journal file, so that a second
// SpoolStore on the same folder (in this process or another) cannot write
// into it: two writers of one journal would overwrite each other's records.
func lockJournal(f *os.File) error {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("lock %s: %w", f.Name(), err)
	}
	return nil
}

// startWriteback starts writing f's dirty pages to the disk without
// waiting, so that the fsyncs of a batch of files that follow wait on
// writes already under way and share file system commits.
func startWriteback(f *os.File) {
	unix.SyncFileRange(int(f.Fd()), 0, 0, unix.SYNC_FILE_RANGE_WRITE)
}

// lowNice is the nice value of the journal's background work (placeAll).
const lowNice = 10

// lowPriority is a goroutine locked to a thread of its own whose CPU
// priority is lowered to lowNice, running what do hands it.
type lowPriority struct {
	work chan func()
	done chan struct{}
}

func startLowPriority() *lowPriority {
	l := &lowPriority{work: make(chan func()), done: make(chan struct{})}
	go func() {
		// Never unlocked: the thread ends with the goroutine rather than
		// serve others at its priority. Should setpriority fail, the work
		// runs at the usual priority.
		runtime.LockOSThread()
		unix.Setpriority(unix.PRIO_PROCESS, unix.Gettid(), lowNice)
		for f := range l.work {
			f()
			l.done <- struct{}{}
		}
	}()
	return l
}

// do runs f on the thread of lower priority and returns when it is done.
func (l *lowPriority) do(f func()) {
	l.work <- f
	<-l.done
}

func (l *lowPriority) stop() { close(l.work) }
