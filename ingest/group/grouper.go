package group

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Grouper turns observations of files under one watch folder into groups of
// files that form one image (or, in folder mode, one archive item), and says
// when each is ready: every file unchanged for Watch.Settle, seen in at least
// two observations, and the group structurally complete.
//
// A Grouper is not safe for concurrent use: one goroutine owns it (the
// watch's loop feeds it notices and asks it for ready groups).
//
// Observe only records what it is told (no I/O). Ready and Waiting read the
// headers of files whose size or modification time changed (DICOM, .mhd,
// .vms, Slidedat.ini, and files of unknown type sniffed for DICOM), and
// Ready stats a file itself when it has been seen only once, which is the
// second observation a file written once and then left alone needs.
//
// Late DICOM arrivals: a DICOM file that arrives for a series already
// returned by Ready is never merged into the returned group. It starts a new
// group whose key is the series key with a suffix, "dicom:s/se/sop#2", then
// "#3", while the grouper remembers the returned files. (After a restart
// the grouper remembers nothing, so all files of the series present then
// form one group under the plain key; its content fingerprint differs from
// the one uploaded before, which the pipeline treats as new content.)
type Grouper struct {
	w       Watch
	root    string // cleaned Watch.Path
	log     *slog.Logger
	mode    string
	exclude []string // valid Watch.Exclude patterns
	skip    []string // rel paths of done/failed folders inside the root

	files   map[string]*fileState // by rel path
	dirs    map[string]int32      // rel dir → number of tracked files below it
	series  map[string]*seriesState
	scanGen uint32

	dirty    bool      // something changed since the last evaluation
	nextWake time.Time // when a settling file settles; zero: none
	stat     func(string) (fs.FileInfo, error)
}

// Waiting is a group (or a file not yet identified) that is not ready, and why.
type Waiting struct {
	Key    string
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
	dicom      dicomHeader
	mhd        mhdHeader
	companions []string
	err        string // why the header is broken, unsupported or unreadable
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
	gen      int32  // DICOM: the generation of its series it was returned in
	reported bool   // "ignored"/"unsupported" logged for this content
	late     bool   // late arrival logged
}

// seriesState remembers, per DICOM series key, which generation the next
// group of new files gets.
type seriesState struct{ next int32 }

// NewGrouper returns a Grouper for w. Invalid exclude patterns are logged and
// ignored (the config validates them; this is a second line).
func NewGrouper(w Watch, log *slog.Logger) *Grouper {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Grouper{
		w:      w,
		root:   filepath.Clean(w.Path),
		log:    log,
		mode:   w.Group,
		files:  make(map[string]*fileState),
		dirs:   make(map[string]int32),
		series: make(map[string]*seriesState),
		stat:   os.Stat,
	}
	if g.mode == "" {
		g.mode = "auto"
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

// Len returns the number of files the grouper tracks.
func (g *Grouper) Len() int { return len(g.files) }

// NextWake returns when, without any new observation, Ready may next have
// something to return (the earliest moment a settling file settles), as of
// the last Ready or Waiting call; zero when nothing is settling.
func (g *Grouper) NextWake() time.Time { return g.nextWake }

// Ready returns the groups that became ready since the last call, sorted by
// key. A returned group is not returned again unless the content (size or
// modification time) of one of its files changes or, except for DICOM
// series, a file joins it; files that disappear (moved or deleted after
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
			if b.series != nil {
				f.gen = b.gen
			}
		}
		if b.series != nil && b.gen >= b.series.next {
			b.series.next = b.gen + 1
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
		out = append(out, Waiting{Key: b.key, Kind: b.kind, Files: rels(b.files), Reason: b.reason})
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

// build is a group being put together during one evaluation.
type build struct {
	key    string
	kind   Kind
	files  []*fileState
	reason string // why it waits; empty: ready

	main   *fileState   // the file that names the others (.mhd, .vms, .mrxs)
	series *seriesState // DICOM
	gen    int32
}

// ignored is a file that no group takes, and why.
type ignored struct {
	rel, reason string
}

// evaluation is everything one pass over the files decided.
type evaluation struct {
	ready    []*build // complete, settled, content not returned yet
	waiting  []*build
	returned []*build // ready, but returned already with this content
	ignored  []ignored
}

func lowerExt(name string) string {
	if hasSuffixFold(name, ".nii.gz") {
		return ".nii.gz"
	}
	return strings.ToLower(path.Ext(name))
}

// isLoneImageExt lists the single-file formats the server converts
// (gc-api.md §7).
func isLoneImageExt(ext string) bool {
	switch ext {
	case ".mha", ".nii", ".nii.gz", ".nrrd", ".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif",
		".png", ".jpg", ".jpeg", ".e2e", ".fds", ".fda":
		return true
	}
	return false
}

func genKey(base string, gen int32) string {
	if gen <= 1 {
		return base
	}
	return base + "#" + strconv.Itoa(int(gen))
}

// settled reports whether f kept its content for Settle and was seen twice.
func (g *Grouper) settled(f *fileState, now int64) bool {
	return now-f.since >= int64(g.w.Settle) && f.obs >= 2
}

// evaluate classifies changed files and decides every group's state.
// With confirm, a file of an otherwise ready group that was seen only once
// is stat'ed again (the second observation) before the group counts as ready.
func (g *Grouper) evaluate(now time.Time, confirm bool) evaluation {
	nowNs := now.UnixNano()
	g.dirty = false
	g.nextWake = time.Time{}
	for _, f := range g.files {
		if f.class == classNone || f.classSig != f.cur {
			g.classify(f)
		}
		if now.Sub(time.Unix(0, f.since)) < g.w.Settle {
			if w := time.Unix(0, f.since).Add(g.w.Settle); g.nextWake.IsZero() || w.Before(g.nextWake) {
				g.nextWake = w
			}
		}
	}
	var ev evaluation
	var builds []*build
	switch g.mode {
	case "file":
		builds = g.buildFiles()
	case "folder":
		builds = g.buildFolders(&ev)
	default:
		builds = g.buildAuto(&ev, nowNs)
	}
	for _, b := range builds {
		if len(b.files) > 1 {
			sort.Slice(b.files, func(i, j int) bool { return b.files[i].rel < b.files[j].rel })
		}
		if b.reason == "" {
			b.reason = g.settleReason(b, nowNs)
		}
		if b.reason == "" && confirm && !g.confirm(b, now) {
			b.reason = "settling: changed on a second look"
		}
		switch {
		case b.reason != "":
			ev.waiting = append(ev.waiting, b)
		case g.alreadyReturned(b):
			ev.returned = append(ev.returned, b)
		default:
			ev.ready = append(ev.ready, b)
		}
	}
	// Returned groups (most of a big folder that is kept) need no order.
	for _, list := range [][]*build{ev.ready, ev.waiting} {
		sort.Slice(list, func(i, j int) bool { return list[i].key < list[j].key })
	}
	sort.Slice(ev.ignored, func(i, j int) bool { return ev.ignored[i].rel < ev.ignored[j].rel })
	return ev
}

// settleReason says why b's files are not settled yet, or "".
func (g *Grouper) settleReason(b *build, now int64) string {
	var left time.Duration
	for _, f := range b.files {
		if d := time.Duration(f.since + int64(g.w.Settle) - now); d > left {
			left = d
		}
	}
	if left > 0 {
		return "settling: " + left.Round(time.Second).String() + " left"
	}
	return ""
}

// confirm gives each file of b seen only once its second observation by
// stat'ing it; a change restarts its settling.
func (g *Grouper) confirm(b *build, now time.Time) bool {
	ok := true
	for _, f := range b.files {
		if f.obs >= 2 {
			continue
		}
		info, err := g.stat(filepath.Join(g.root, filepath.FromSlash(f.rel)))
		if err != nil {
			// Gone or unreadable: the watcher's notice or the next scan says
			// which; until then the group is not ready.
			ok = false
			continue
		}
		g.Observe(filepath.Join(g.root, filepath.FromSlash(f.rel)), info, now)
		if f.obs < 2 {
			ok = false
			if w := now.Add(g.w.Settle); g.nextWake.IsZero() || w.Before(g.nextWake) {
				g.nextWake = w
			}
		}
	}
	return ok
}

func (g *Grouper) alreadyReturned(b *build) bool {
	for _, f := range b.files {
		if f.retKey != b.key || f.retSig != f.cur {
			return false
		}
	}
	return true
}

// unreadable is the waiting reason of a file whose header could not be read.
func unreadable(f *fileState) string {
	if f.class == classNone && f.info != nil && f.info.err != "" {
		return "cannot read " + path.Base(f.rel) + ": " + f.info.err
	}
	return ""
}

// buildFiles: every file its own image.
func (g *Grouper) buildFiles() []*build {
	out := make([]*build, 0, len(g.files))
	for _, f := range g.files {
		b := &build{key: f.rel, kind: KindSingle, files: []*fileState{f}, reason: unreadable(f)}
		if f.class == classDICOMPartial {
			b.reason = "DICOM file not complete (" + f.info.err + ")"
		}
		out = append(out, b)
	}
	return out
}

// buildFolders: every direct subfolder of the root is one item.
func (g *Grouper) buildFolders(ev *evaluation) []*build {
	byKey := make(map[string]*build)
	var out []*build
	for _, f := range g.files {
		top, _, nested := strings.Cut(f.rel, "/")
		if !nested {
			if !f.reported {
				f.reported = true
				g.log.Info("file directly in the drop folder ignored in folder mode", "file", f.rel)
			}
			ev.ignored = append(ev.ignored, ignored{f.rel, "folder mode: only subfolders are items"})
			continue
		}
		b := byKey[top]
		if b == nil {
			b = &build{key: top, kind: KindFolder}
			byKey[top] = b
			out = append(out, b)
		}
		b.files = append(b.files, f)
	}
	for _, b := range out {
		for _, f := range b.files {
			if r := g.incompleteReason(f); r != "" {
				b.reason = r
				break
			}
		}
	}
	return out
}

// incompleteReason says why a file is not structurally complete on its own
// (folder mode, where any file may be a value).
func (g *Grouper) incompleteReason(f *fileState) string {
	if r := unreadable(f); r != "" {
		return r
	}
	switch f.class {
	case classDICOMPartial:
		return "DICOM file " + path.Base(f.rel) + " not complete (" + f.info.err + ")"
	case classMHD:
		if f.info.mhd.DataFile != "" {
			return g.mhdDataReason(f)
		}
	}
	return ""
}

// mhdDataReason says why the data file an .mhd names is not there yet, or "".
func (g *Grouper) mhdDataReason(m *fileState) string {
	h := m.info.mhd
	d := g.files[path.Join(path.Dir(m.rel), h.DataFile)]
	switch {
	case d == nil:
		return "waiting for data file " + h.DataFile
	case h.Expected >= 0 && d.cur.size < h.Expected:
		return fmt.Sprintf("waiting for data file %s: %d of %d bytes", h.DataFile, d.cur.size, h.Expected)
	}
	return ""
}

// buildAuto groups by format.
func (g *Grouper) buildAuto(ev *evaluation, now int64) []*build {
	var out []*build
	claimed := make(map[string]bool) // rel paths that belong to a main file's group
	mrxs := make(map[string]*build)  // slide folder rel → its group
	single := func(f *fileState, reason string) {
		out = append(out, &build{key: f.rel, kind: KindSingle, files: []*fileState{f}, reason: reason})
	}
	dir := func(rel string) string { return path.Dir(rel) }

	// Main files first: what they name is theirs.
	for _, f := range g.files {
		switch f.class {
		case classMHD:
			h := f.info.mhd
			if h.Local || h.Unsupported != "" {
				if h.Unsupported != "" && !f.reported {
					f.reported = true
					g.log.Warn("mhd header sent as an image of its own", "file", f.rel, "reason", h.Unsupported)
				}
				single(f, "")
				continue
			}
			dataRel := path.Join(dir(f.rel), h.DataFile)
			claimed[dataRel] = true
			b := &build{key: f.rel, kind: KindMHD, files: []*fileState{f}, main: f, reason: g.mhdDataReason(f)}
			if d := g.files[dataRel]; d != nil {
				b.files = append(b.files, d)
			}
			out = append(out, b)
		case classVMS:
			b := &build{key: f.rel, kind: KindZip, files: []*fileState{f}, main: f}
			if f.info.err != "" {
				b.kind = KindSingle
				if !f.reported {
					f.reported = true
					g.log.Warn("vms file sent as an image of its own", "file", f.rel, "reason", f.info.err)
				}
			}
			for _, name := range f.info.companions {
				rel := path.Join(dir(f.rel), name)
				claimed[rel] = true
				if c := g.files[rel]; c != nil {
					b.files = append(b.files, c)
				} else if b.reason == "" {
					b.reason = "waiting for " + name
				}
			}
			out = append(out, b)
		case classMRXS:
			folder := strings.TrimSuffix(f.rel, path.Ext(f.rel))
			b := &build{key: f.rel, kind: KindZip, files: []*fileState{f}, main: f}
			mrxs[folder] = b
			out = append(out, b)
		}
	}

	series := make(map[string]*build)     // generation key → group
	seen := make(map[string]bool)         // series keys with files present
	undetermined := make(map[string]bool) // folders with a file not yet identified
	var dicomGroups []*build
	for _, f := range g.files {
		if claimed[f.rel] {
			continue
		}
		if len(mrxs) > 0 {
			if b := mrxsOwner(mrxs, f.rel); b != nil {
				b.files = append(b.files, f)
				continue
			}
		}
		switch f.class {
		case classMHD, classVMS, classMRXS:
			// grouped above
		case classNone:
			single(f, unreadable(f))
		case classImage:
			single(f, "")
		case classDICOMBroken:
			if !f.reported {
				f.reported = true
				g.log.Warn("DICOM file without usable UIDs sent as an image of its own", "file", f.rel, "reason", f.info.err)
			}
			single(f, "")
		case classDICOM, classDICOMPartial:
			h := f.info.dicom
			if !h.UIDsKnown {
				// Cut short before its UIDs: which series it joins is not known.
				if !g.settled(f, now) {
					undetermined[dir(f.rel)] = true
				}
				single(f, "DICOM file not complete ("+f.info.err+")")
				continue
			}
			if h.Series == "" || h.Study == "" {
				if !f.reported {
					f.reported = true
					g.log.Warn("DICOM file without StudyInstanceUID or SeriesInstanceUID sent as an image of its own", "file", f.rel)
				}
				b := &build{key: f.rel, kind: KindSingle, files: []*fileState{f}}
				if f.class == classDICOMPartial {
					b.reason = "DICOM file not complete (" + f.info.err + ")"
				}
				out = append(out, b)
				continue
			}
			base := "dicom:" + h.Study + "/" + h.Series + "/" + h.SOPClass
			seen[base] = true
			st := g.series[base]
			if st == nil {
				st = &seriesState{next: 1}
				g.series[base] = st
			}
			gen := f.gen
			if gen == 0 {
				gen = st.next
				if st.next > 1 && !f.late {
					f.late = true
					g.log.Warn("DICOM file arrived for a series already returned; it starts a new image", "file", f.rel, "series", base, "image", genKey(base, gen))
				}
			}
			key := genKey(base, gen)
			b := series[key]
			if b == nil {
				b = &build{key: key, kind: KindZip, series: st, gen: gen}
				series[key] = b
				dicomGroups = append(dicomGroups, b)
			}
			b.files = append(b.files, f)
		case classUndetermined:
			if !g.settled(f, now) {
				undetermined[dir(f.rel)] = true
				out = append(out, &build{key: f.rel, files: []*fileState{f}, reason: "not identified yet"})
				continue
			}
			g.ignore(ev, f, "unknown file type")
		case classUnknown:
			g.ignore(ev, f, "unknown file type")
		case classMHDData:
			g.ignore(ev, f, "data file that no .mhd header names")
		case classSlidedat:
			g.ignore(ev, f, "Slidedat.ini outside an .mrxs slide folder")
		}
	}
	for base := range g.series {
		if !seen[base] {
			delete(g.series, base) // all its files are gone
		}
	}
	for _, b := range dicomGroups {
		if len(b.files) == 1 {
			b.kind = KindSingle
		}
		for _, f := range b.files {
			if f.class == classDICOMPartial {
				b.reason = "DICOM file " + path.Base(f.rel) + " not complete (" + f.info.err + ")"
				break
			}
			if undetermined[dir(f.rel)] {
				b.reason = "waiting for the other files in " + dir(f.rel) + " to be identified"
			}
		}
		out = append(out, b)
	}
	for folder, b := range mrxs {
		b.reason = g.mrxsReason(folder, b)
	}
	return out
}

// mrxsOwner returns the .mrxs group whose slide folder holds rel.
func mrxsOwner(mrxs map[string]*build, rel string) *build {
	for i := strings.LastIndexByte(rel, '/'); i > 0; i = strings.LastIndexByte(rel[:i], '/') {
		if b := mrxs[rel[:i]]; b != nil {
			return b
		}
	}
	return nil
}

// mrxsReason says what an .mrxs slide still lacks: its folder's Slidedat.ini
// and the data files that lists.
func (g *Grouper) mrxsReason(folder string, b *build) string {
	name := path.Base(folder)
	ini := g.files[folder+"/Slidedat.ini"]
	if ini == nil {
		for _, f := range b.files {
			if strings.EqualFold(f.rel, folder+"/Slidedat.ini") {
				ini = f
			}
		}
	}
	if ini == nil {
		return "waiting for " + name + "/Slidedat.ini"
	}
	if ini.info != nil && ini.info.err != "" {
		return "Slidedat.ini of " + name + " unusable: " + ini.info.err
	}
	if ini.info != nil {
		for _, d := range ini.info.companions {
			if g.files[folder+"/"+d] == nil {
				return "waiting for " + name + "/" + d
			}
		}
	}
	return ""
}

func (g *Grouper) ignore(ev *evaluation, f *fileState, reason string) {
	ev.ignored = append(ev.ignored, ignored{f.rel, reason})
	if !f.reported {
		f.reported = true
		g.log.Info("file ignored", "file", f.rel, "reason", reason)
	}
}
