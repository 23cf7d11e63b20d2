package watcher

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
)

// run is the state of one Run call. Only the goroutine running loop touches
// it; fsnotify's own reader goroutine talks to it through channels.
type run struct {
	*Watcher
	out chan<- Batch

	fsw     *fsnotify.Watcher   // nil while polling or while Root is gone
	polling bool                // Poll, or fell back after watches ran out
	dirs    map[string]struct{} // folders with a watch, to tell folder events from file events
	pending map[string]struct{} // paths noticed since the last flush

	links    onceSet // symbolic links already logged
	unusable onceSet // folders already logged as unreadable or unwatchable

	gone     bool // Root could not be read at the last try
	backoff  time.Duration
	rootInfo fs.FileInfo // Root at the last full scan, to notice it was replaced
	realRoot string      // Root with symbolic links resolved, to judge link targets
	lastN    int         // files in the last full scan, to size the next one

	flushT  *time.Timer
	flushOn bool
	scanT   *time.Timer
	scanAt  time.Time
	slab    []fileInfo // file infos are carved from chunks, not allocated one by one
}

func newRun(w *Watcher, out chan<- Batch) *run {
	return &run{
		Watcher: w,
		out:     out,
		polling: w.poll,
		dirs:    map[string]struct{}{},
		pending: map[string]struct{}{},
	}
}

func (r *run) loop(ctx context.Context) {
	// The first full scan runs at once.
	r.scanT = time.NewTimer(0)
	r.scanAt = time.Now()
	r.flushT = time.NewTimer(time.Hour)
	r.flushT.Stop()
	for {
		var events <-chan fsnotify.Event
		var errs <-chan error
		if r.fsw != nil {
			events, errs = r.fsw.Events, r.fsw.Errors
		}
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			r.handle(ctx, ev)
		case err := <-errs:
			r.watchError(err)
		case err := <-r.injectErr:
			r.watchError(err)
		case <-r.flushT.C:
			r.flushOn = false
			if !r.flush(ctx) {
				return
			}
		case <-r.scanT.C:
			r.scanAt = time.Time{}
			if !r.fullScan(ctx) {
				return
			}
		}
	}
}

// stop releases what loop holds. fsnotify's Close waits for its reader
// goroutine to end.
func (r *run) stop() {
	if r.scanT != nil {
		r.scanT.Stop()
	}
	if r.flushT != nil {
		r.flushT.Stop()
	}
	r.closeWatch()
}

func (r *run) interval() time.Duration {
	if r.polling {
		return r.pollEvery
	}
	return r.rescan
}

// scanIn makes the next full scan happen within d, never later than it was
// already due: a burst of requests costs one scan.
func (r *run) scanIn(d time.Duration) {
	at := time.Now().Add(d)
	if !r.scanAt.IsZero() && !r.scanAt.After(at) {
		return
	}
	r.scanAt = at
	r.scanT.Reset(d)
}

func (r *run) send(ctx context.Context, b Batch) bool {
	select {
	case r.out <- b:
		return true
	case <-ctx.Done():
		return false
	}
}

// handle takes one file-system event. Folder bookkeeping happens at once,
// so a new folder is watched before much can land in it; file events wait
// in pending until the next flush.
func (r *run) handle(ctx context.Context, ev fsnotify.Event) {
	if ev.Op&^fsnotify.Chmod == 0 {
		return // permissions or timestamps only: content and size unchanged
	}
	p := ev.Name
	if p == r.root {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			r.scanIn(0) // the scan finds Root missing and says so
		}
		return
	}
	if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
		// A folder that went away took everything in it, and the event
		// names only the folder: noting its path tells the consumer so
		// (see Event.Path) without a full scan, which matters when every
		// uploaded folder is moved away.
		r.dropDir(p)
	}
	if ev.Has(fsnotify.Create) {
		if fi, err := os.Lstat(p); err == nil && fi.IsDir() {
			r.addTree(ctx, p)
			return
		}
	}
	r.note(p)
}

// note queues p for the next flush.
func (r *run) note(p string) {
	r.pending[p] = struct{}{}
	if !r.flushOn {
		r.flushOn = true
		r.flushT.Reset(r.debounce)
	}
}

// addTree watches a folder that just appeared, and everything in it, and
// notes every file found: files created before the folder's watch existed
// send no event of their own.
func (r *run) addTree(ctx context.Context, dir string) {
	wasPolling := r.polling
	err := r.walkCtx(ctx, dir, func(p string, _ *fileInfo) { r.note(p) })
	if err != nil && ctx.Err() == nil && !errors.Is(err, fs.ErrNotExist) {
		r.unreadable(dir, err)
	}
	if r.polling && !wasPolling {
		r.scanIn(0) // events may have been lost while falling back
	}
}

// dropDir forgets the watches on dir and below, if dir was a watched
// folder. A watch follows its folder when it is renamed, and would keep
// reporting the old path.
func (r *run) dropDir(dir string) {
	if _, ok := r.dirs[dir]; !ok {
		return
	}
	prefix := dir + string(filepath.Separator)
	for d := range r.dirs {
		if d == dir || strings.HasPrefix(d, prefix) {
			if r.fsw != nil {
				_ = r.fsw.Remove(d) // fails when inotify already dropped it; either way it is gone
			}
			delete(r.dirs, d)
		}
	}
}

// watchError handles an error from fsnotify. Events may have been lost, so
// a full scan restores the truth.
func (r *run) watchError(err error) {
	if errors.Is(err, fsnotify.ErrEventOverflow) {
		r.log.Warn("too many file-system events at once; rescanning the drop folder (raise sysctl fs.inotify.max_queued_events if this recurs)",
			"root", r.root)
	} else {
		r.log.Warn("file-system watch error; rescanning the drop folder", "root", r.root, "err", err)
	}
	r.scanIn(0)
}

// flush sends the pending paths with their current Lstat. It returns false
// when ctx ended while sending.
func (r *run) flush(ctx context.Context) bool {
	if len(r.pending) == 0 {
		return true
	}
	paths := make([]string, 0, len(r.pending))
	for p := range r.pending {
		paths = append(paths, p)
	}
	clear(r.pending)
	slices.Sort(paths)
	events := make([]Event, 0, len(paths))
	for _, p := range paths {
		ev := Event{Path: p}
		fi, err := os.Lstat(p)
		switch {
		case err == nil && fi.Mode().IsRegular():
			ev.Info = r.compact(p, fi)
		case err == nil && fi.Mode()&fs.ModeSymlink != 0:
			r.link(p)
		case err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR):
			r.log.Warn("cannot stat file; treating it as gone until it can be read", "path", p, "err", err)
		}
		events = append(events, ev)
	}
	return r.send(ctx, Batch{Events: events})
}

// fullScan lists every file under Root, with fresh watches unless polling,
// and sends the listing. It returns false when ctx ended.
func (r *run) fullScan(ctx context.Context) bool {
	// The scan supersedes whatever was pending.
	clear(r.pending)
	r.flushT.Stop()
	r.flushOn = false

	// Start from a fresh set of watches: each folder's watch is added just
	// before the folder is read, so the listing plus later events miss
	// nothing, and no watch left over from a folder renamed unseen (after an
	// overflow) can report under its old path.
	r.closeWatch()

	info, err := os.Stat(r.root) // Root itself may be a link, e.g. to a mount
	if err == nil && !info.IsDir() {
		err = errors.New("not a folder")
	}
	if err != nil {
		return r.lost(ctx, err)
	}
	if r.gone {
		r.log.Info("drop folder is back; watching it again", "root", r.root)
		r.gone = false
		r.backoff = 0
	} else if r.rootInfo != nil && !os.SameFile(r.rootInfo, info) {
		r.log.Info("drop folder was replaced (remounted?); watching the new one", "root", r.root)
	}
	r.rootInfo = info
	if real, err := filepath.EvalSymlinks(r.root); err == nil {
		r.realRoot = real
	} else {
		r.realRoot = r.root
	}
	if !r.polling {
		r.openWatch()
	}

	events, err := r.scanFiles(ctx)
	if ctx.Err() != nil {
		return false
	}
	if err != nil {
		return r.lost(ctx, err)
	}
	r.scanIn(r.interval())
	return r.send(ctx, Batch{Events: events, FullScan: true})
}

// scanFiles walks Root and returns every regular file in it.
func (r *run) scanFiles(ctx context.Context) ([]Event, error) {
	r.links.rotate()
	r.unusable.rotate()
	events := make([]Event, 0, r.lastN+r.lastN/8+16)
	err := r.walkCtx(ctx, r.root, func(p string, fi *fileInfo) {
		events = append(events, Event{Path: p, Info: fi})
	})
	if err != nil {
		return nil, err
	}
	r.lastN = len(events)
	return events, nil
}

// lost records that Root cannot be read, tells the consumer once, and
// retries with backoff.
func (r *run) lost(ctx context.Context, err error) bool {
	r.closeWatch()
	if r.backoff == 0 {
		r.backoff = r.minBackoff
	} else {
		r.backoff = min(2*r.backoff, r.maxBackoff)
	}
	r.scanIn(r.backoff)
	if r.gone {
		r.log.Debug("drop folder still gone", "root", r.root, "err", err, "retry_in", r.backoff)
		return true
	}
	r.gone = true
	r.rootInfo = nil
	r.log.Warn("drop folder is gone (removed or unmounted?); retrying until it is back",
		"root", r.root, "err", err)
	return r.send(ctx, Batch{FullScan: true, Gone: true})
}

// openWatch starts a new fsnotify watcher, or falls back to polling.
func (r *run) openWatch() {
	fw, err := fsnotify.NewWatcher()
	if err != nil {
		hint := ""
		if errors.Is(err, syscall.EMFILE) {
			hint = "; raise the limit with: sysctl -w fs.inotify.max_user_instances=1024 (persist it in /etc/sysctl.d/)"
		}
		r.log.Error("cannot start file-system events; falling back to rescanning every poll interval"+hint,
			"root", r.root, "err", err, "poll_every", r.pollEvery)
		r.polling = true
		return
	}
	r.fsw = fw
}

func (r *run) closeWatch() {
	if r.fsw != nil {
		_ = r.fsw.Close() // the only error is "already closed"
		r.fsw = nil
	}
	clear(r.dirs)
}

// watchDir adds a watch on dir if events are in use.
func (r *run) watchDir(dir string) {
	if r.fsw == nil {
		return
	}
	err := r.addWatch(r.fsw, dir)
	switch {
	case err == nil:
		r.dirs[dir] = struct{}{}
	case errors.Is(err, syscall.ENOSPC):
		r.log.Error("out of inotify watches: falling back to rescanning every poll interval; "+
			"raise the limit with: sysctl -w fs.inotify.max_user_watches=1048576 "+
			"(persist it in /etc/sysctl.d/) and restart gcingest",
			"root", r.root, "folder", dir, "poll_every", r.pollEvery)
		r.closeWatch()
		r.polling = true
	case errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE):
		// kqueue (macOS, BSD) holds a file descriptor per watched file.
		r.log.Error("out of file descriptors for watches: falling back to rescanning every poll interval; "+
			"on macOS and BSD every file costs one, so set poll = true for large drop folders or raise the open-file limit",
			"root", r.root, "folder", dir, "poll_every", r.pollEvery)
		r.closeWatch()
		r.polling = true
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR):
		// Gone already; its parent's event or the next scan tells.
	default:
		if r.unusable.first(dir) {
			r.log.Warn("cannot watch folder; changes in it are found by rescans only", "folder", dir, "err", err)
		}
	}
}

// unreadable logs, once, a folder that cannot be listed. Its files are
// missing from scans until it can be.
func (r *run) unreadable(dir string, err error) {
	if r.unusable.first("read " + dir) {
		r.log.Warn("cannot read folder; its files are skipped until it can be read", "folder", dir, "err", err)
	}
}

// link logs a symbolic link once and skips it.
func (r *run) link(p string) {
	if !r.links.first(p) {
		return
	}
	target, err := filepath.EvalSymlinks(p)
	switch {
	case err != nil:
		r.log.Info("skipping broken symbolic link", "path", p, "err", err)
	case target == r.realRoot || strings.HasPrefix(target, r.realRoot+string(filepath.Separator)):
		r.log.Debug("skipping symbolic link inside the drop folder; its target is reported under its own path",
			"path", p, "target", target)
	default:
		r.log.Warn("skipping symbolic link that points outside the drop folder", "path", p, "target", target)
	}
}

// onceSet remembers keys already logged. rotate, at each full scan, forgets
// keys not seen since the previous one, so the set stays as small as the
// tree and a problem that comes back is logged again.
type onceSet struct {
	cur, prev map[string]struct{}
}

func (s *onceSet) first(key string) bool {
	if s.cur == nil {
		s.cur = map[string]struct{}{}
	}
	if _, ok := s.cur[key]; ok {
		return false
	}
	s.cur[key] = struct{}{}
	_, seen := s.prev[key]
	return !seen
}

func (s *onceSet) rotate() {
	s.prev, s.cur = s.cur, nil
}
