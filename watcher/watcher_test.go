package watcher

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// logBuf collects log output from the watcher's goroutine for the test's.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logBuf) count(s string) int { return strings.Count(l.String(), s) }

// harness runs a Watcher and keeps the map a consumer would keep.
type harness struct {
	t     *testing.T
	root  string
	out   chan Batch
	logs  *logBuf
	files map[string]fs.FileInfo
	// byScan says, per path, whether the batch that last listed it was a
	// full scan (false: an event batch).
	byScan    map[string]bool
	goneEvent map[string]bool // paths reported with a nil Info outside full scans
	batches   []Batch
	scans     int
}

const waitLimit = 10 * time.Second

// start runs a Watcher on opts (Debounce defaults to 10ms here); tweak, if
// not nil, sets test seams before Run. Cleanup stops it and checks Run
// returned.
func start(t *testing.T, opts Options, tweak func(*Watcher)) *harness {
	t.Helper()
	logs := &logBuf{}
	opts.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if opts.Debounce == 0 {
		opts.Debounce = 10 * time.Millisecond
	}
	w, err := New(opts)
	if err != nil {
		t.Fatalf("New(%+v): %v", opts, err)
	}
	w.minBackoff = 10 * time.Millisecond
	w.maxBackoff = 50 * time.Millisecond
	if tweak != nil {
		tweak(w)
	}
	h := &harness{
		t: t, root: w.root, out: make(chan Batch), logs: logs,
		files: map[string]fs.FileInfo{}, byScan: map[string]bool{}, goneEvent: map[string]bool{},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx, h.out) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run returned %v, want nil", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %v of cancel", waitLimit)
		}
		if t.Failed() {
			t.Logf("watcher log:\n%s", logs.String())
		}
	})
	return h
}

func (h *harness) apply(b Batch) {
	h.batches = append(h.batches, b)
	if b.FullScan {
		h.scans++
		clear(h.files)
	}
	for _, ev := range b.Events {
		if ev.Info == nil {
			delete(h.files, ev.Path)
			for p := range h.files { // a gone folder takes its files along
				if strings.HasPrefix(p, ev.Path+string(filepath.Separator)) {
					delete(h.files, p)
				}
			}
			if !b.FullScan {
				h.goneEvent[ev.Path] = true
			}
			continue
		}
		h.files[ev.Path] = ev.Info
		h.byScan[ev.Path] = b.FullScan
	}
}

// waitFor applies batches until cond holds, failing the test after
// waitLimit.
func (h *harness) waitFor(what string, cond func() bool) {
	h.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for !cond() {
		select {
		case b := <-h.out:
			h.apply(b)
		case <-deadline.C:
			h.t.Fatalf("waited %v for %s; files now: %v", waitLimit, what, h.paths())
		}
	}
}

func (h *harness) paths() []string {
	var ps []string
	for p := range h.files {
		ps = append(ps, p)
	}
	return ps
}

func (h *harness) waitScans(n int) {
	h.t.Helper()
	h.waitFor(fmt.Sprintf("%d full scans", n), func() bool { return h.scans >= n })
}

func (h *harness) has(p string, size int64) func() bool {
	return func() bool {
		fi, ok := h.files[p]
		return ok && fi.Size() == size
	}
}

func (h *harness) lacks(p string) func() bool {
	return func() bool { _, ok := h.files[p]; return !ok }
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// eventOpts watches root with events only: the periodic rescan is far away.
func eventOpts(root string) Options {
	return Options{Root: root, Rescan: time.Hour}
}

func TestNew(t *testing.T) {
	tests := []struct {
		name          string
		opts          Options
		wantErr       bool
		wantRescan    time.Duration
		wantPollEvery time.Duration
	}{
		{name: "defaults", opts: Options{Root: "/data/in"}, wantRescan: time.Minute, wantPollEvery: 10 * time.Second},
		{name: "short rescan bounds poll", opts: Options{Root: "/data/in", Rescan: 3 * time.Second}, wantRescan: 3 * time.Second, wantPollEvery: 3 * time.Second},
		{name: "explicit poll every", opts: Options{Root: "/data/in", Poll: true, PollEvery: time.Minute}, wantRescan: time.Minute, wantPollEvery: time.Minute},
		{name: "empty root", opts: Options{}, wantErr: true},
		{name: "relative root", opts: Options{Root: "data/in"}, wantErr: true},
		{name: "negative rescan", opts: Options{Root: "/data/in", Rescan: -time.Second}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w, err := New(tt.opts)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("New(%+v) = nil error, want an error", tt.opts)
				}
				return
			}
			if err != nil {
				t.Fatalf("New(%+v): %v", tt.opts, err)
			}
			if w.rescan != tt.wantRescan || w.pollEvery != tt.wantPollEvery {
				t.Errorf("rescan, pollEvery = %v, %v; want %v, %v", w.rescan, w.pollEvery, tt.wantRescan, tt.wantPollEvery)
			}
		})
	}
}

func TestFirstBatchIsFullScan(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "a.mha"), "aaa")
	writeFile(t, filepath.Join(root, "sub", ".hidden.tmp"), "h")
	if err := os.Mkdir(filepath.Join(root, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	first := h.batches[0]
	if !first.FullScan || first.Gone {
		t.Fatalf("first batch FullScan, Gone = %v, %v; want true, false", first.FullScan, first.Gone)
	}
	var got []string
	for _, ev := range first.Events {
		got = append(got, ev.Path)
	}
	want := []string{filepath.Join(root, "a.mha"), filepath.Join(root, "sub", ".hidden.tmp")}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("first scan listed %q, want %q (hidden and temporary names are the grouper's to judge)", got, want)
	}
	if fi := h.files[want[0]]; fi == nil || fi.Size() != 3 || fi.Name() != "a.mha" || !fi.Mode().IsRegular() {
		t.Errorf("info for a.mha = %v, want a regular file named a.mha of 3 bytes", fi)
	}
}

func TestNewFileNoticedByEvent(t *testing.T) {
	for _, name := range []string{"plain.mha", "with space #1 ü 画像.mha"} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			h := start(t, eventOpts(root), nil)
			h.waitScans(1)
			p := filepath.Join(root, name)
			writeFile(t, p, "12345")
			h.waitFor(name+" to appear", h.has(p, 5))
			if h.byScan[p] {
				t.Errorf("%s was first listed by a full scan, want by an event batch", name)
			}
		})
	}
}

func TestFilesInNewFoldersAreFound(t *testing.T) {
	root := t.TempDir()
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	// Created as fast as possible: most land before the watcher has a watch
	// on their folder, so only scanning the new folder finds them.
	var want []string
	for _, rel := range []string{"a/1.dcm", "a/2.dcm", "a/b/3.dcm", "a/b/c/d/4.dcm", "e/f/g/5.dcm"} {
		p := filepath.Join(root, filepath.FromSlash(rel))
		writeFile(t, p, "x")
		want = append(want, p)
	}
	h.waitFor("all files in new folders", func() bool {
		for _, p := range want {
			if !h.has(p, 1)() {
				return false
			}
		}
		return true
	})
	if h.scans != 1 {
		t.Errorf("full scans = %d, want 1: new folders should be found by events and their own scan", h.scans)
	}
	// The new folders are watched: a later file in the deepest one is noticed.
	late := filepath.Join(root, "a", "b", "c", "d", "late.dcm")
	writeFile(t, late, "yy")
	h.waitFor("late file in a new folder", h.has(late, 2))
}

func TestFolderMovedInIsScanned(t *testing.T) {
	base := t.TempDir()
	root := filepath.Join(base, "drop")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	// A tree built beside the root and moved in sends one event, for its
	// top folder: everything inside is found only by scanning it.
	staging := filepath.Join(base, "staging")
	for _, rel := range []string{"series/1.dcm", "series/2.dcm", "series/sub/3.dcm"} {
		writeFile(t, filepath.Join(staging, filepath.FromSlash(rel)), "d")
	}
	if err := os.Rename(staging, filepath.Join(root, "case 1")); err != nil {
		t.Fatal(err)
	}
	want := []string{
		filepath.Join(root, "case 1", "series", "1.dcm"),
		filepath.Join(root, "case 1", "series", "2.dcm"),
		filepath.Join(root, "case 1", "series", "sub", "3.dcm"),
	}
	h.waitFor("every file of the moved-in tree", func() bool {
		for _, p := range want {
			if !h.has(p, 1)() {
				return false
			}
		}
		return true
	})
	if h.scans != 1 {
		t.Errorf("full scans = %d, want 1: the moved-in tree should be found by scanning it alone", h.scans)
	}
}

func TestRenameFromTemporaryName(t *testing.T) {
	root := t.TempDir()
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	tmp, final := filepath.Join(root, "x.tmp"), filepath.Join(root, "x.mha")
	writeFile(t, tmp, "abc")
	h.waitFor("x.tmp", h.has(tmp, 3))
	if err := os.Rename(tmp, final); err != nil {
		t.Fatal(err)
	}
	h.waitFor("x.mha under its new name, x.tmp gone", func() bool { return h.has(final, 3)() && h.lacks(tmp)() })
	if !h.goneEvent[tmp] {
		t.Errorf("no event with nil Info for %s after the rename", tmp)
	}
}

func TestDeleteNoticed(t *testing.T) {
	root := t.TempDir()
	p := filepath.Join(root, "d.mha")
	writeFile(t, p, "abc")
	h := start(t, eventOpts(root), nil)
	h.waitFor("d.mha", h.has(p, 3))
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	h.waitFor("d.mha gone", h.lacks(p))
	if !h.goneEvent[p] {
		t.Errorf("deleted %s was not reported by an event with nil Info", p)
	}
}

func TestFolderRenamedOrRemoved(t *testing.T) {
	root := t.TempDir()
	a1, a2 := filepath.Join(root, "a", "1.mha"), filepath.Join(root, "a", "b", "2.mha")
	writeFile(t, a1, "1")
	writeFile(t, a2, "22")
	h := start(t, eventOpts(root), nil)
	h.waitFor("a/1.mha and a/b/2.mha", func() bool { return h.has(a1, 1)() && h.has(a2, 2)() })

	if err := os.Rename(filepath.Join(root, "a"), filepath.Join(root, "z")); err != nil {
		t.Fatal(err)
	}
	z1, z2 := filepath.Join(root, "z", "1.mha"), filepath.Join(root, "z", "b", "2.mha")
	h.waitFor("files under their new folder only", func() bool {
		return h.lacks(a1)() && h.lacks(a2)() && h.has(z1, 1)() && h.has(z2, 2)()
	})
	// A watch that followed the renamed folder must report the new path.
	z3 := filepath.Join(root, "z", "b", "3.mha")
	writeFile(t, z3, "333")
	h.waitFor("z/b/3.mha", h.has(z3, 3))
	if _, ok := h.files[filepath.Join(root, "a", "b", "3.mha")]; ok {
		t.Errorf("a file in the renamed folder was reported under the old folder name")
	}

	// Moved out of the root: the folder's own notice is all there is.
	if err := os.Rename(filepath.Join(root, "z"), filepath.Join(t.TempDir(), "done")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("files of the folder moved away gone", func() bool { return len(h.files) == 0 })
	if h.scans != 1 {
		t.Errorf("full scans = %d, want 1: a folder going away is told by an event", h.scans)
	}
	if !h.goneEvent[filepath.Join(root, "z")] {
		t.Errorf("no event with nil Info for the folder moved away")
	}

	writeFile(t, z1, "1")
	h.waitFor("z/1.mha again", h.has(z1, 1))
	if err := os.RemoveAll(filepath.Join(root, "z")); err != nil {
		t.Fatal(err)
	}
	h.waitFor("no files left", func() bool { return len(h.files) == 0 })
}

func TestPollModeFindsFilesWithoutEvents(t *testing.T) {
	root := t.TempDir()
	h := start(t, Options{Root: root, Poll: true, PollEvery: 20 * time.Millisecond}, nil)
	h.waitScans(1)
	p := filepath.Join(root, "sub", "p.mha")
	writeFile(t, p, "pp")
	h.waitFor("p.mha", h.has(p, 2))
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	h.waitFor("p.mha gone", h.lacks(p))
	for i, b := range h.batches {
		if !b.FullScan {
			t.Errorf("batch %d is not a full scan; poll mode must not use events", i)
		}
	}
}

func TestWatchErrorsCauseFullScan(t *testing.T) {
	tests := []struct {
		name    string
		err     error
		wantLog string
	}{
		{"overflow", fsnotify.ErrEventOverflow, "fs.inotify.max_queued_events"},
		{"other error", errors.New("injected watch failure"), "injected watch failure"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			blind := filepath.Join(root, "blind")
			if err := os.Mkdir(blind, 0o755); err != nil {
				t.Fatal(err)
			}
			inject := make(chan error)
			h := start(t, eventOpts(root), func(w *Watcher) {
				w.injectErr = inject
				// No watch on "blind": events from it are lost, as in an overflow.
				add := w.addWatch
				w.addWatch = func(fw *fsnotify.Watcher, dir string) error {
					if dir == blind {
						return errors.New("injected: cannot watch")
					}
					return add(fw, dir)
				}
			})
			h.waitScans(1)
			p := filepath.Join(blind, "lost.mha")
			writeFile(t, p, "l")
			select {
			case inject <- tt.err:
			case <-time.After(waitLimit):
				t.Fatal("watcher did not take the injected error")
			}
			h.waitFor("lost.mha found by a rescan", h.has(p, 1))
			if !h.byScan[p] || h.scans < 2 {
				t.Errorf("lost.mha listed by full scan = %v after %d scans; want a second full scan to find it", h.byScan[p], h.scans)
			}
			if h.logs.count(tt.wantLog) == 0 {
				t.Errorf("log does not mention %q:\n%s", tt.wantLog, h.logs)
			}
			if got := h.logs.count("cannot watch folder"); got != 1 {
				t.Errorf("unwatchable folder logged %d times over %d scans, want once", got, h.scans)
			}
		})
	}
}

func TestSymlinks(t *testing.T) {
	root, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret.mha")
	writeFile(t, secret, "s")
	real := filepath.Join(root, "real.mha")
	writeFile(t, real, "r")
	for link, target := range map[string]string{
		"out.mha":    secret,  // outside: skipped and logged
		"outdir":     outside, // folder outside: not followed
		"in.mha":     real,    // inside: its target is listed under its own name
		"loop":       root,    // would loop if followed
		"broken.mha": filepath.Join(root, "nothing"),
	} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	inject := make(chan error)
	h := start(t, eventOpts(root), func(w *Watcher) { w.injectErr = inject })
	h.waitScans(1)
	if got := h.paths(); len(got) != 1 || got[0] != real {
		t.Errorf("listed %q, want only %q", got, real)
	}
	inject <- errors.New("force a second scan")
	h.waitScans(2)
	if got := h.paths(); len(got) != 1 || got[0] != real {
		t.Errorf("second scan listed %q, want only %q", got, real)
	}
	outLink := filepath.Join(root, "out.mha")
	if got := h.logs.count("points outside the drop folder"); got != 2 {
		t.Errorf("links pointing outside logged %d times after 2 scans, want 2 (out.mha and outdir, once each)", got)
	}
	if !strings.Contains(h.logs.String(), outLink) {
		t.Errorf("log does not name %s", outLink)
	}

	// A link made while watching is skipped too.
	late := filepath.Join(root, "late.mha")
	if err := os.Symlink(secret, late); err != nil {
		t.Fatal(err)
	}
	h.waitFor("log of the new outside link", func() bool {
		select {
		case b := <-h.out:
			h.apply(b)
		case <-time.After(10 * time.Millisecond):
		}
		return h.logs.count("points outside the drop folder") == 3
	})
	if _, ok := h.files[late]; ok {
		t.Errorf("link %s pointing outside was reported as a file", late)
	}
}

func TestRootRemovedAndRecreated(t *testing.T) {
	for _, poll := range []bool{false, true} {
		t.Run(fmt.Sprintf("poll=%v", poll), func(t *testing.T) {
			root := filepath.Join(t.TempDir(), "drop")
			old := filepath.Join(root, "old.mha")
			writeFile(t, old, "o")
			h := start(t, Options{Root: root, Rescan: time.Hour, Poll: poll, PollEvery: 20 * time.Millisecond}, nil)
			h.waitFor("old.mha", h.has(old, 1))
			if err := os.RemoveAll(root); err != nil {
				t.Fatal(err)
			}
			h.waitFor("a Gone batch", func() bool {
				last := h.batches[len(h.batches)-1]
				return last.Gone && len(h.files) == 0
			})
			if got := h.logs.count("drop folder is gone"); got != 1 {
				t.Errorf(`"drop folder is gone" logged %d times, want 1`, got)
			}
			fresh := filepath.Join(root, "new", "fresh.mha")
			writeFile(t, fresh, "ff")
			h.waitFor("fresh.mha in the recreated root", h.has(fresh, 2))
			if !strings.Contains(h.logs.String(), "drop folder is back") {
				t.Errorf("log does not say the drop folder is back:\n%s", h.logs)
			}
			if !poll {
				// Watches are back too.
				again := filepath.Join(root, "again.mha")
				writeFile(t, again, "aaa")
				h.waitFor("again.mha by event", h.has(again, 3))
				if h.byScan[again] {
					t.Errorf("again.mha found by a full scan, want an event: watches were not re-established")
				}
			}
		})
	}
}

func TestRootMissingAtStart(t *testing.T) {
	root := filepath.Join(t.TempDir(), "not-yet")
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	if !h.batches[0].Gone {
		t.Fatalf("first batch Gone = false for a missing root, want true")
	}
	p := filepath.Join(root, "a.mha")
	writeFile(t, p, "a")
	h.waitFor("a.mha once the root exists", h.has(p, 1))
}

func TestOutOfWatchesFallsBackToPolling(t *testing.T) {
	tests := []struct {
		name    string
		errno   syscall.Errno
		wantLog string
	}{
		{"inotify watches", syscall.ENOSPC, "fs.inotify.max_user_watches"},
		{"kqueue descriptors", syscall.EMFILE, "poll = true"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			writeFile(t, filepath.Join(root, "sub", "x.mha"), "x")
			var adds int
			h := start(t, Options{Root: root, Rescan: time.Hour, PollEvery: 20 * time.Millisecond}, func(w *Watcher) {
				add := w.addWatch
				w.addWatch = func(fw *fsnotify.Watcher, dir string) error {
					adds++ // only the Run goroutine calls it
					if adds > 1 {
						return fmt.Errorf("add watch %s: %w", dir, tt.errno)
					}
					return add(fw, dir)
				}
			})
			h.waitScans(1)
			if got := h.logs.count(tt.wantLog); got != 1 {
				t.Errorf("%q in the log %d times, want 1:\n%s", tt.wantLog, got, h.logs)
			}
			if len(h.files) != 1 {
				t.Errorf("first scan listed %v, want sub/x.mha despite running out of watches", h.paths())
			}
			p := filepath.Join(root, "sub", "later.mha")
			writeFile(t, p, "ll")
			h.waitFor("later.mha by polling", h.has(p, 2))
			if !h.byScan[p] {
				t.Errorf("later.mha came from an event batch after the fall back to polling")
			}
		})
	}
}

func TestLongPaths(t *testing.T) {
	root := t.TempDir()
	h := start(t, eventOpts(root), nil)
	h.waitScans(1)
	dir := root
	for i := range 8 {
		dir = filepath.Join(dir, fmt.Sprintf("%d %s #ü", i, strings.Repeat("long-name-", 20)))
	}
	p := filepath.Join(dir, strings.Repeat("é", 100)+".mha")
	if len(p) < 1600 {
		t.Fatalf("test path is only %d bytes long", len(p))
	}
	writeFile(t, p, "long")
	h.waitFor("file at the end of a long path", h.has(p, 4))
}

func TestChmodOnlyIgnored(t *testing.T) {
	w, err := New(Options{Root: "/data/in"})
	if err != nil {
		t.Fatal(err)
	}
	r := newRun(w, make(chan Batch))
	r.flushT = time.NewTimer(time.Hour)
	defer r.flushT.Stop()
	r.handle(context.Background(), fsnotify.Event{Name: "/data/in/a.mha", Op: fsnotify.Chmod})
	if len(r.pending) != 0 {
		t.Errorf("chmod event queued %v, want nothing", r.pending)
	}
	r.handle(context.Background(), fsnotify.Event{Name: "/data/in/a.mha", Op: fsnotify.Write | fsnotify.Chmod})
	if len(r.pending) != 1 {
		t.Errorf("write event queued %v, want a.mha", r.pending)
	}
}
