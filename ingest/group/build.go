package group

import (
	"errors"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/gcingest/gcingest/complete"
	"github.com/gcingest/gcingest/watch"
)

// build is a group being put together during one evaluation.
type build struct {
	key    string
	kind   Kind
	files  []*fileState
	reason string // why it waits; empty: ready

	main  *fileState // the file that names the others (.mhd, .vms, .mrxs)
	dicom bool       // a DICOM group: settles after DICOMSettle
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
// (docs/ARCHITECTURE.md, "Which files form one image").
func isLoneImageExt(ext string) bool {
	switch ext {
	case ".mha", ".nii", ".nii.gz", ".nrrd", ".tif", ".tiff", ".svs", ".ndpi", ".scn", ".bif",
		".png", ".jpg", ".jpeg", ".e2e", ".fds", ".fda":
		return true
	}
	return false
}

// settled reports whether f kept its content for Settle and was seen twice.
func (g *Grouper) settled(f *fileState, now int64) bool {
	return now-f.since >= int64(g.w.Settle) && f.obs >= 2
}

// dicomSettle is how long a DICOM series must go without a new or changed
// file before it is complete: the watch's DICOMSettle, or Settle when that is
// longer or DICOMSettle is unset.
func (g *Grouper) dicomSettle() time.Duration {
	return max(g.w.DICOMSettle, g.w.Settle)
}

// dicomSettled reports whether f kept its content for the DICOM settle time.
func (g *Grouper) dicomSettled(f *fileState, now int64) bool {
	return now-f.since >= int64(g.dicomSettle()) && f.obs >= 2
}

// wakeAt makes NextWake no later than t.
func (g *Grouper) wakeAt(t time.Time) {
	if g.nextWake.IsZero() || t.Before(g.nextWake) {
		g.nextWake = t
	}
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
	case watch.GroupFile:
		builds = g.buildFiles(nowNs)
	case watch.GroupFolder:
		builds = g.buildFolders(&ev, nowNs)
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
		if b.dicom {
			g.dicomWake(b, nowNs)
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

// dicomWake makes the grouper wake when the DICOM settle time of b's
// newest file ends, which may be later than Settle's.
func (g *Grouper) dicomWake(b *build, now int64) {
	for _, f := range b.files {
		if end := f.since + int64(g.dicomSettle()); end > now {
			g.wakeAt(time.Unix(0, end))
		}
	}
}

// settleReason says why b's files are not settled yet, or "". A DICOM
// series waits for DICOMSettle after its newest file.
func (g *Grouper) settleReason(b *build, now int64) string {
	settle, what := g.w.Settle, "settling: "
	if b.dicom {
		settle, what = g.dicomSettle(), "series settling (no new file for "+g.dicomSettle().String()+"): "
	}
	var left time.Duration
	for _, f := range b.files {
		if d := time.Duration(f.since + int64(settle) - now); d > left {
			left = d
		}
	}
	if left > 0 {
		return what + left.Round(time.Second).String() + " left"
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
func (g *Grouper) buildFiles(now int64) []*build {
	out := make([]*build, 0, len(g.files))
	for _, f := range g.files {
		b := &build{key: f.rel, kind: KindSingle, files: []*fileState{f}, reason: unreadable(f)}
		if f.class == classDICOMPartial {
			b.reason = "DICOM file not complete (" + f.info.err + ")"
		}
		if b.reason == "" {
			b.reason = g.proofReason(f, now)
		}
		out = append(out, b)
	}
	return out
}

// buildFolders: every direct subfolder of the root is one item.
func (g *Grouper) buildFolders(ev *evaluation, now int64) []*build {
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
			if r := g.incompleteReason(f, now); r != "" {
				b.reason = r
				break
			}
		}
	}
	return out
}

// incompleteReason says why a file is not structurally complete on its own
// (folder mode, where any file may be a value).
func (g *Grouper) incompleteReason(f *fileState, now int64) string {
	if r := unreadable(f); r != "" {
		return r
	}
	switch f.class {
	case classDICOMPartial:
		return "DICOM file " + path.Base(f.rel) + " not complete (" + f.info.err + ")"
	case classMHD:
		if f.info.mhd.DataFile != "" {
			return g.mhdDataReason(f, now)
		}
	}
	return g.proofReason(f, now)
}

// mhdDataReason says why the data file an .mhd names is not there yet, or
// is shorter than the header says (for IncompleteWait), or "".
func (g *Grouper) mhdDataReason(m *fileState, now int64) string {
	h := m.info.mhd
	d := g.files[path.Join(path.Dir(m.rel), h.DataFile)]
	if d == nil {
		return "waiting for data file " + h.DataFile
	}
	err := h.checkData(d.cur.size)
	var ie *complete.IncompleteError
	if errors.As(err, &ie) {
		return g.incompleteFor(d, h.DataFile, err, now)
	}
	return ""
}
