package group

import (
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// Grouper turns observations of files under one watch folder into groups of
// files that form one image (or, in folder mode, one archive item), and says
// when each is ready: every file unchanged for the watch's Settle, seen in at least
// two observations, and the group structurally complete.
//
// A Grouper is not safe for concurrent use: one goroutine owns it (the
// watch's loop feeds it notices and asks it for ready groups).
//
// Observe only records what it is told (no I/O). Ready and Waiting read the
// headers of files whose size or modification time changed (DICOM, .mhd,
// .vms, Slidedat.ini, files of unknown type sniffed for DICOM, and images
// whose format proves itself complete: package complete), and
// Ready stats a file itself when it has been seen only once, which is the
// second observation a file written once and then left alone needs.
//
// DICOM series settle as a PACS decides a study is stable: no new instance
// for the watch's DICOMSettle. A file that arrives for a series already returned
// by Ready joins it: the group is returned again, same key, every file, and
// the pipeline makes the same item hold the complete series. A file that
// stays cut (truncated) for DICOMSettle no longer holds its series back: the
// group is returned and fails in the pipeline with the file named. An image
// its own header proves cut (a .mha, NIfTI, NRRD, TIFF, PNG or JPEG, an
// .mhd's data file) waits likewise, for the watch's IncompleteWait (proof.go).
type Grouper struct {
	w       watch.Spec
	root    string // cleaned watch.Spec.Path
	log     *slog.Logger
	mode    watch.Group
	exclude []string // valid watch.Spec.Exclude patterns
	skip    []string // rel paths of done/failed folders inside the root

	files   map[string]*fileState // by rel path
	dirs    map[string]int32      // rel dir → number of tracked files below it
	scanGen uint32

	unknown  int       // files now ignored as of unknown type (Unknown)
	dirty    bool      // something changed since the last evaluation
	nextWake time.Time // when a settling file settles; zero: none
	stat     func(string) (fs.FileInfo, error)
}

// Waiting is a group (or a file not yet identified) that is not ready, and why.
type Waiting struct {
	Key    string
	Label  string   // DICOM: folder, series, file count (the key is UIDs)
	Kind   Kind     // empty for a file not yet identified
	Files  []string // rel paths, sorted
	Reason string   // e.g. "settling: 12s left", "waiting for data file ct.raw"
}

// sig is what "unchanged" compares.
type sig struct {
	size  int64
	mtime int64 // unix nanoseconds
}

// fileClass is what a file is, from its name and header.
type fileClass uint8

const (
	classNone         fileClass = iota // not read yet (or unreadable: info.err)
	classImage                         // a lone image by extension
	classMHD                           // .mhd header: info.mhd
	classMHDData                       // .raw/.zraw: only part of an .mhd group
	classDICOM                         // parsed to its end: info.dicom
	classDICOMPartial                  // DICOM that ends inside an element
	classDICOMBroken                   // DICOM we cannot follow: an image of its own
	classMRXS                          // .mrxs: its sibling folder holds the rest
	classVMS                           // .vms/.vmu: info.companions
	classSlidedat                      // an MRXS Slidedat.ini: info.companions
	classUnknown                       // not an image we know, not DICOM
	classUndetermined                  // too short to tell whether it is DICOM
)

// fileInfo is the per-class detail of a file that needed reading.
type fileInfo struct {
	dicom      dicomInfo
	mhd        mhdHeader
	companions []string
	err        string // why the header is broken, unsupported or unreadable
	// proof is package complete's verdict on a lone image (or an .mhd's own
	// header, or its LOCAL data): nil when proven complete.
	proof error
}

type fileState struct {
	rel      string
	cur      sig
	since    int64 // unix nanoseconds of the first observation of cur
	obs      int32 // observations of cur
	scan     uint32
	class    fileClass
	classSig sig // cur when class was determined
	info     *fileInfo

	retKey   string // the group this file was last returned in by Ready
	retSig   sig    // and its content then
	reported bool   // "ignored"/"unsupported" logged for this content
	unknown  bool   // counted in Grouper.unknown
}

// NewGrouper returns a Grouper for w. Invalid exclude patterns are logged and
// ignored (the config validates them; this is a second line).
func NewGrouper(w watch.Spec, log *slog.Logger) *Grouper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Grouper{
		w:     w,
		root:  filepath.Clean(w.Path),
		log:   log,
		mode:  w.Group,
		files: make(map[string]*fileState),
		dirs:  make(map[string]int32),
		stat:  os.Stat,
	}
	if g.mode == "" {
		g.mode = watch.GroupAuto
	}
	for _, p := range w.Exclude {
		if _, err := path.Match(p, "x"); err != nil {
			log.Warn("exclude pattern is invalid and ignored", "pattern", p, "err", err)
			continue
		}
		g.exclude = append(g.exclude, p)
	}
	for _, d := range []string{w.DoneDir, w.FailedDir} {
		if d == "" {
			continue
		}
		if rel, ok := g.relPath(filepath.Clean(d)); ok {
			g.skip = append(g.skip, rel)
		}
	}
	return g
}

// relPath returns p relative to the root, slash-separated, if p is below it.
func (g *Grouper) relPath(p string) (string, bool) {
	if len(p) <= len(g.root)+1 || !strings.HasPrefix(p, g.root) || !os.IsPathSeparator(p[len(g.root)]) {
		if g.root == string(filepath.Separator) && len(p) > 1 && os.IsPathSeparator(p[0]) {
			return filepath.ToSlash(p[1:]), true
		}
		return "", false
	}
	return filepath.ToSlash(p[len(g.root)+1:]), true
}

// Excluded reports whether a path (absolute, below the root) is never picked
// up: hidden and temporary names, exclude patterns, anything under a hidden
// folder or the done/failed folders, and the desktop clutter the server drops
// from ZIPs anyway.
func (g *Grouper) Excluded(p string) bool {
	rel, ok := g.relPath(p)
	return !ok || g.excludedRel(rel)
}

func (g *Grouper) excludedRel(rel string) bool {
	if g.excludedDir(rel) {
		return true
	}
	base := rel[strings.LastIndexByte(rel, '/')+1:]
	if base == "" || base[0] == '.' || base[0] == '~' {
		return true
	}
	if hasSuffixFold(base, ".tmp") || hasSuffixFold(base, ".part") ||
		strings.EqualFold(base, "desktop.ini") || strings.EqualFold(base, "Thumbs.db") {
		return true
	}
	for _, p := range g.exclude {
		if ok, _ := path.Match(p, base); ok {
			return true
		}
	}
	return false
}

// excludedDir reports whether anything at rel is skipped because of where
// it is: under a hidden folder, __MACOSX, or the done/failed folders (or is
// one of those folders itself).
func (g *Grouper) excludedDir(rel string) bool {
	for _, s := range g.skip {
		if rel == s || (strings.HasPrefix(rel, s) && len(rel) > len(s) && rel[len(s)] == '/') {
			return true
		}
	}
	for rest := rel; ; {
		i := strings.IndexByte(rest, '/')
		if i < 0 {
			return false
		}
		if dir := rest[:i]; dir == "" || dir[0] == '.' || dir == "__MACOSX" {
			return true
		}
		rest = rest[i+1:]
	}
}

func hasSuffixFold(s, suffix string) bool {
	return len(s) >= len(suffix) && strings.EqualFold(s[len(s)-len(suffix):], suffix)
}

// Observe records one notice about path (absolute): info is its current
// (Lstat-like) information, nil when it is gone. A gone folder drops every
// file below it. Paths outside the root, folders and excluded names are
// ignored. Observe does no I/O.
func (g *Grouper) Observe(p string, info fs.FileInfo, now time.Time) {
	rel, ok := g.relPath(p)
	if !ok {
		return
	}
	if info == nil {
		g.remove(rel)
		return
	}
	if !info.Mode().IsRegular() || g.excludedRel(rel) {
		return
	}
	s := sig{size: info.Size(), mtime: info.ModTime().UnixNano()}
	f := g.track(rel)
	if f.cur != s || f.obs == 0 {
		f.cur, f.since, f.obs = s, now.UnixNano(), 1
		g.dirty = true
		return
	}
	if f.obs < 1<<30 {
		f.obs++
	}
	if f.obs == 2 {
		g.dirty = true
	}
}

// track returns the state of the file rel, tracking it from now on if it
// was not, and marks it seen in the current scan.
func (g *Grouper) track(rel string) *fileState {
	f := g.files[rel]
	if f == nil {
		f = &fileState{rel: rel}
		g.files[rel] = f
		g.addDirs(rel, 1)
	}
	f.scan = g.scanGen
	return f
}

// seen records p (absolute) as a file of that size and modification time,
// unchanged since since and observed often enough to count as settled
// once Settle has passed since then. Plan and ImageKind describe files
// they already know this way, without a watcher's two observations.
func (g *Grouper) seen(p string, size int64, mtime, since time.Time) {
	rel, ok := g.relPath(p)
	if !ok || g.excludedRel(rel) {
		return
	}
	f := g.track(rel)
	f.cur, f.since, f.obs = sig{size: size, mtime: mtime.UnixNano()}, since.UnixNano(), 2
	g.dirty = true
}

// BeginScan starts a full scan: Observe every file present, then EndScan.
func (g *Grouper) BeginScan() { g.scanGen++ }

// EndScan ends a full scan: files not observed since BeginScan are gone.
func (g *Grouper) EndScan(now time.Time) {
	for rel, f := range g.files {
		if f.scan != g.scanGen {
			g.drop(rel)
		}
	}
}

func (g *Grouper) remove(rel string) {
	if _, ok := g.files[rel]; ok {
		g.drop(rel)
		return
	}
	if g.dirs[rel] == 0 {
		return
	}
	prefix := rel + "/"
	for r := range g.files {
		if strings.HasPrefix(r, prefix) {
			g.drop(r)
		}
	}
}

func (g *Grouper) drop(rel string) {
	if f := g.files[rel]; f != nil && f.unknown {
		g.unknown--
	}
	delete(g.files, rel)
	g.addDirs(rel, -1)
	g.dirty = true
}

// addDirs counts a file in every folder above it, so that a notice that a
// folder is gone can be told from one about an untracked file cheaply.
func (g *Grouper) addDirs(rel string, d int32) {
	for i := strings.LastIndexByte(rel, '/'); i > 0; i = strings.LastIndexByte(rel[:i], '/') {
		dir := rel[:i]
		n := g.dirs[dir] + d
		if n <= 0 {
			delete(g.dirs, dir)
		} else {
			g.dirs[dir] = n
		}
	}
}

// Unknown returns how many tracked files are ignored as of a type the
// server does not import (each logged once as "file ignored").
func (g *Grouper) Unknown() int { return g.unknown }

// Len returns the number of files the grouper tracks.
func (g *Grouper) Len() int { return len(g.files) }

// NextWake returns when, without any new observation, Ready may next have
// something to return (the earliest moment a settling file settles), as of
// the last Ready or Waiting call; zero when nothing is settling.
func (g *Grouper) NextWake() time.Time { return g.nextWake }

// Ready returns the groups that became ready since the last call, sorted by
// key. A returned group is not returned again unless the content (size or
// modification time) of one of its files changes or a file joins it; files that disappear (moved or deleted after
// upload) never cause a return.
func (g *Grouper) Ready(now time.Time) []Group {
	if !g.dirty && (g.nextWake.IsZero() || now.Before(g.nextWake)) {
		return nil
	}
	ev := g.evaluate(now, true)
	out := make([]Group, 0, len(ev.ready))
	for _, b := range ev.ready {
		for _, f := range b.files {
			f.retKey, f.retSig = b.key, f.cur
		}
		out = append(out, g.group(b))
	}
	return out
}

// Waiting returns what is not ready yet and why, sorted by key. It does not
// change what Ready returns.
func (g *Grouper) Waiting(now time.Time) []Waiting {
	ev := g.evaluate(now, false)
	out := make([]Waiting, 0, len(ev.waiting))
	for _, b := range ev.waiting {
		wt := Waiting{Key: b.key, Kind: b.kind, Files: rels(b.files), Reason: b.reason}
		if b.dicom {
			wt.Label = dicomLabel(b)
		}
		out = append(out, wt)
	}
	return out
}

func rels(fs []*fileState) []string {
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = f.rel
	}
	return out
}

func (g *Grouper) group(b *build) Group {
	gr := Group{Watch: g.w.Path, Key: b.key, Kind: b.kind, Files: make([]File, len(b.files))}
	if b.dicom {
		gr.Label = dicomLabel(b)
	}
	for i, f := range b.files {
		gr.Files[i] = File{
			Path:    filepath.Join(g.root, filepath.FromSlash(f.rel)),
			Rel:     f.rel,
			Size:    f.cur.size,
			ModTime: time.Unix(0, f.cur.mtime),
		}
	}
	return gr
}
