package group

import (
	"path"
	"path/filepath"
	"strings"
	"time"
)

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
			if h.Local || h.Unsupported != "" || h.Cut != nil {
				if h.Unsupported != "" && !f.reported {
					f.reported = true
					g.log.Warn("mhd header sent as an image of its own", "file", f.rel, "reason", h.Unsupported)
				}
				// A header still being written names no data file yet.
				single(f, g.proofReason(f, now))
				continue
			}
			dataRel := path.Join(dir(f.rel), h.DataFile)
			claimed[dataRel] = true
			b := &build{key: f.rel, kind: KindMHD, files: []*fileState{f}, main: f, reason: g.mhdDataReason(f, now)}
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

	series := make(map[string]*build)     // series key → group
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
			single(f, g.proofReason(f, now))
		case classDICOMBroken:
			if !f.reported {
				f.reported = true
				if g.w.Deidentify {
					// The pipeline refuses it (ingest refuseRawDICOM):
					// only a series that reads whole leaves, de-identified.
					g.log.Warn("DICOM file the reader cannot follow; with deidentify it fails and nothing of it is sent", "file", f.rel, "reason", f.info.err)
				} else {
					g.log.Warn("DICOM file without usable UIDs sent as an image of its own", "file", f.rel, "reason", f.info.err)
				}
			}
			single(f, "")
		case classDICOM, classDICOMPartial:
			h := f.info.dicom
			if !h.UIDsKnown || h.CheckGroupKey() != nil {
				// Cut short before its UIDs (which series it joins is not
				// known), or without them (panimg cannot group it): a DICOM
				// group of its own, so that it is checked (and fails, if
				// cut) and de-identified like any series.
				if !h.UIDsKnown && !g.settled(f, now) {
					undetermined[dir(f.rel)] = true
				}
				if h.UIDsKnown && !f.reported {
					f.reported = true
					g.log.Warn("DICOM file without the UIDs the server groups by sent as an image of its own", "file", f.rel, "reason", h.CheckGroupKey())
				}
				dicomGroups = append(dicomGroups, &build{key: "dicom:" + f.rel, kind: KindZip, files: []*fileState{f}, dicom: true})
				continue
			}
			// A file arriving for a series already returned joins it: the
			// group comes back with every file, under the same key, and the
			// pipeline replaces the item's value with the complete series.
			key := seriesKey(dir(f.rel), h.Header)
			b := series[key]
			if b == nil {
				b = &build{key: key, kind: KindZip, dicom: true}
				series[key] = b
				dicomGroups = append(dicomGroups, b)
			}
			b.files = append(b.files, f)
		case classUndetermined:
			if now-f.since >= int64(g.w.Settle) && f.obs < 2 {
				// Seen once (one event) and quiet since: look again now,
				// as confirm does for a group, rather than leave it
				// unidentified until the next full rescan, minutes away.
				g.lookAgain(f, time.Unix(0, now))
			}
			if !g.settled(f, now) {
				undetermined[dir(f.rel)] = true
				out = append(out, &build{key: f.rel, files: []*fileState{f}, reason: "not identified yet"})
				continue
			}
			g.ignoreUnknown(ev, f)
		case classUnknown:
			g.ignoreUnknown(ev, f)
		case classMHDData:
			g.ignore(ev, f, "data file that no .mhd header names")
		case classSlidedat:
			g.ignore(ev, f, "Slidedat.ini outside an .mrxs slide folder")
		}
	}
	for _, b := range dicomGroups {
		for _, f := range b.files {
			if f.class == classDICOMPartial && !g.dicomSettled(f, now) {
				// Still being written, or cut: after the DICOM settle time
				// the group goes on and fails there with the file named.
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

// lookAgain gives f its second observation by stat'ing it; a change
// restarts its settling, and a file gone is left to the watcher's notice.
func (g *Grouper) lookAgain(f *fileState, now time.Time) {
	p := filepath.Join(g.root, filepath.FromSlash(f.rel))
	if info, err := g.stat(p); err == nil {
		g.Observe(p, info, now)
	}
}

// ignoreUnknown ignores a file of a type the server does not import, and
// counts it (Grouper.Unknown) for status and /metrics.
func (g *Grouper) ignoreUnknown(ev *evaluation, f *fileState) {
	if !f.unknown {
		f.unknown = true
		g.unknown++
	}
	g.ignore(ev, f, "unknown file type")
}

func (g *Grouper) ignore(ev *evaluation, f *fileState, reason string) {
	ev.ignored = append(ev.ignored, ignored{f.rel, reason})
	if !f.reported {
		f.reported = true
		g.log.Info("file ignored", "file", f.rel, "reason", reason)
	}
}
