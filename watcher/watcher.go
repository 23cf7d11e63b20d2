// Package watcher turns one root folder into a stream of "this path may have
// changed" notices. File-system events (fsnotify) give speed; a periodic full
// rescan gives truth, because network shares send no events, the kernel's
// event queue overflows and inotify watches run out. The package knows
// nothing of images or uploads: it reports regular files, and the consumer
// decides what they mean.
//
// A consumer can keep a simple map from path to file info: a Batch with
// FullScan set replaces the map (a file not listed is gone), and every other
// Batch updates it (an Event with a nil Info deletes its path and, when that
// path was a folder, every path below it).
//
// Symbolic links are never followed and never reported. A link whose target
// is inside the root adds nothing: the target is reported under its own path.
// A link pointing outside the root is logged once and skipped, so gcingest
// never uploads files from outside the drop folder and never loops.
package watcher

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Defaults for Options fields left zero.
const (
	DefaultRescan   = time.Minute
	DefaultDebounce = 200 * time.Millisecond
	// MaxDefaultPollEvery caps the default PollEvery: polling a share every
	// minute would hold back every image by up to a minute more than settle
	// asks for, while rescanning a share much more often than every ten
	// seconds costs its file server more than it gains.
	MaxDefaultPollEvery = 10 * time.Second
)

// Options configure a Watcher.
type Options struct {
	// Root is the absolute path of the folder to watch. It need not exist
	// when Run starts: a missing root is retried with backoff.
	Root string
	// Rescan is the interval between full rescans while events are
	// delivered (default DefaultRescan).
	Rescan time.Duration
	// Poll turns file-system events off: changes are found by rescans only,
	// every PollEvery. Use it for SMB/NFS shares, where no events arrive.
	Poll bool
	// PollEvery is the rescan interval in poll mode, and after a fall back
	// to polling because inotify watches ran out. Default: Rescan, but at
	// most MaxDefaultPollEvery.
	PollEvery time.Duration
	// Debounce is how long events are gathered before they are sent as one
	// Batch, counted from the first of them (default DefaultDebounce). A
	// file being written is thus reported at most once per Debounce.
	Debounce time.Duration
	// Logger receives what the watcher has to say; nil discards it.
	Logger *slog.Logger
}

// Event says that the regular file at Path may have changed, appeared or
// gone.
type Event struct {
	// Path is the absolute path of the file: Root joined with the file's
	// path relative to Root. Outside full scans it may also name a folder
	// that was removed or renamed away, with Info nil: every file below
	// that path is gone too (the only notice of them that the file system
	// gives). It never names a folder that exists.
	Path string
	// Info is the Lstat result when the notice was made (Sys returns nil).
	// It is nil when no regular file is at Path any more: removed, renamed
	// away, or replaced by a directory or a symbolic link.
	Info fs.FileInfo
}

// Batch is what the watcher sends: a set of notices, or a full listing.
type Batch struct {
	// Events are the changed paths, each once, sorted by Path outside full
	// scans.
	Events []Event
	// FullScan is true when Events lists every regular file under Root
	// (sent at start, every rescan, after an event-queue overflow or a
	// watch error, and when Root comes back): files not listed are gone.
	FullScan bool
	// Gone is true, with FullScan and no Events, when Root itself cannot be
	// read (removed, unmounted). The watcher keeps retrying and sends a full
	// scan when Root is back.
	Gone bool
}

// Watcher watches one root folder. Make it with New and start it with Run.
type Watcher struct {
	root      string
	rescan    time.Duration
	poll      bool
	pollEvery time.Duration
	debounce  time.Duration
	log       *slog.Logger

	// Seams for tests in this package; New sets the production values.
	addWatch   func(w *fsnotify.Watcher, dir string) error
	injectErr  chan error // nil in production: a nil channel is never ready
	minBackoff time.Duration
	maxBackoff time.Duration
}

// New checks opts, fills in defaults and returns a Watcher. It does not
// touch the file system.
func New(opts Options) (*Watcher, error) {
	if opts.Root == "" {
		return nil, errors.New("watcher: root folder is empty")
	}
	if !filepath.IsAbs(opts.Root) {
		return nil, fmt.Errorf("watcher: root folder %q is not an absolute path", opts.Root)
	}
	if opts.Rescan < 0 || opts.PollEvery < 0 || opts.Debounce < 0 {
		return nil, fmt.Errorf("watcher %s: negative interval", opts.Root)
	}
	w := &Watcher{
		root:       filepath.Clean(opts.Root),
		rescan:     opts.Rescan,
		poll:       opts.Poll,
		pollEvery:  opts.PollEvery,
		debounce:   opts.Debounce,
		log:        opts.Logger,
		addWatch:   func(fw *fsnotify.Watcher, dir string) error { return fw.Add(dir) },
		minBackoff: time.Second,
		maxBackoff: 30 * time.Second,
	}
	if w.rescan == 0 {
		w.rescan = DefaultRescan
	}
	if w.pollEvery == 0 {
		w.pollEvery = min(w.rescan, MaxDefaultPollEvery)
	}
	if w.debounce == 0 {
		w.debounce = DefaultDebounce
	}
	if w.log == nil {
		w.log = slog.New(slog.DiscardHandler)
	}
	return w, nil
}

// Run watches Root and sends batches to out until ctx is done, then returns
// nil. The first batch is a full scan. Run blocks on out when the consumer
// is slow (events wait in the kernel meanwhile; if its queue overflows, a
// full scan follows). Run closes nothing it did not open: out stays open.
// Every goroutine Run starts has ended when it returns. Call Run once.
func (w *Watcher) Run(ctx context.Context, out chan<- Batch) error {
	if out == nil {
		return fmt.Errorf("watcher %s: nil output channel", w.root)
	}
	r := newRun(w, out)
	defer r.stop()
	r.loop(ctx)
	return nil
}
