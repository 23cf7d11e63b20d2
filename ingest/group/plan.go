package group

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/gcingest/gcingest/bytesize"
	"github.com/gcingest/gcingest/printable"
	"github.com/gcingest/gcingest/watch"
)

// Plan states.
const (
	PlanReady   = "ready"
	PlanWaiting = "waiting"
	PlanIgnored = "ignored"
	// PlanRecorded marks a ready group that the state file already holds
	// with the same files: the agent will not send it again. Plan itself
	// never reads the state file; `gcingest plan` sets it when it can.
	PlanRecorded = "recorded"
)

// PlanReport is how one watch folder would be grouped right now.
type PlanReport struct {
	Watch   string
	Group   watch.Group
	Entries []PlanEntry
}

// PlanEntry is one group (ready or waiting) or one ignored file.
type PlanEntry struct {
	State string // PlanReady | PlanWaiting | PlanIgnored
	Key   string
	// Label describes a DICOM group for people (folder, series number and
	// description, SOP class, file count); plan prints it instead of the
	// key, which is made of UIDs.
	Label  string
	Kind   Kind   // empty for ignored files and files not identified yet
	Files  []File // sorted by Rel
	Reason string // why it waits or is ignored; for a folder item, why it would fail
	// Values (folder mode) says which file goes to which interface. The
	// server is not asked: whether each interface takes what it is given
	// is checked by gcingest check and, for each folder, before upload.
	Values []PlanValue
	Item   string // folder mode: the existing item item.txt names, if any
}

// PlanValue is one value of a folder item.
type PlanValue struct {
	Interface string
	Source    string   // "main image", the [watch.values] pattern, or "values.json"
	Kind      Kind     // how image files go (single, mhd, zip); empty otherwise
	Files     []string // relative to the watch
	JSON      string   // a values.json value
}

// Plan scans w's folder once, without a watcher and without uploading, and
// reports how its files group and which groups are ready. A file whose
// modification time is at least Settle old counts as settled (unchanged
// since then), so the report shows what the daemon would do once it has
// watched the folder for Settle.
func Plan(ctx context.Context, w watch.Spec, log *slog.Logger) (PlanReport, error) {
	g := NewGrouper(w, log)
	now := time.Now()
	rep := PlanReport{Watch: w.Path, Group: g.mode}
	err := filepath.WalkDir(g.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if p == g.root {
				return err
			}
			g.log.Warn("plan: cannot read, skipped", "path", p, "err", err)
			return nil
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == g.root {
			return nil
		}
		if d.IsDir() {
			if rel, ok := g.relPath(p); ok && g.excludedDir(rel+"/") {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil // symlinks are not followed, as the watcher does not follow them out
		}
		info, err := d.Info()
		if err != nil {
			return nil // gone meanwhile
		}
		// Unchanged since its modification time: settled once that is
		// Settle ago.
		since := info.ModTime()
		if since.After(now) {
			since = now
		}
		g.seen(p, info.Size(), info.ModTime(), since)
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("plan: scan %s: %w", w.Path, err)
	}
	ev := g.evaluate(now, false)
	add := func(state string, bs []*build) {
		for _, b := range bs {
			gr := g.group(b)
			e := PlanEntry{State: state, Key: b.key, Label: gr.Label, Kind: b.kind, Files: gr.Files, Reason: b.reason}
			if b.kind == KindFolder && e.Reason == "" {
				planFolderEntry(w, &e)
			}
			rep.Entries = append(rep.Entries, e)
		}
	}
	add(PlanReady, ev.ready)
	add(PlanReady, ev.returned) // nothing is returned in a fresh grouper; kept for completeness
	add(PlanWaiting, ev.waiting)
	for _, ig := range ev.ignored {
		f := g.files[ig.rel]
		rep.Entries = append(rep.Entries, PlanEntry{State: PlanIgnored, Key: ig.rel, Reason: ig.reason,
			Files: []File{{Path: filepath.Join(g.root, filepath.FromSlash(ig.rel)), Rel: ig.rel, Size: f.cur.size, ModTime: time.Unix(0, f.cur.mtime)}}})
	}
	return rep, nil
}

// planFolderEntry fills in a ready folder item's values, or the reason it
// would fail that can be told without the server.
func planFolderEntry(w watch.Spec, e *PlanEntry) {
	l, err := LayoutFolder(w, e.Key, e.Files, ReadSmall)
	if err != nil {
		e.Reason = "will fail: " + err.Error()
		return
	}
	e.Item = l.ItemPK
	rels := func(fs []File) []string {
		out := make([]string, len(fs))
		for i, f := range fs {
			out[i] = f.Rel
		}
		return out
	}
	if len(l.Main) > 0 {
		kind, err := ImageKind(w.Path, "main image for "+w.Interface, l.Main)
		if err != nil {
			e.Reason = "will fail: " + err.Error()
		}
		e.Values = append(e.Values, PlanValue{Interface: w.Interface, Source: "main image", Kind: kind, Files: rels(l.Main)})
	}
	for _, slug := range l.Slugs() {
		if raw, ok := l.JSON[slug]; ok {
			e.Values = append(e.Values, PlanValue{Interface: slug, Source: ValuesFile, JSON: string(raw), Files: []string{l.JSONFile.Rel}})
			continue
		}
		v := PlanValue{Interface: slug, Source: l.Sources[slug], Files: rels(l.ByIface[slug])}
		if len(v.Files) > 1 {
			// Only an image interface takes several files; show how they
			// would group.
			v.Kind, _ = ImageKind(w.Path, slug, l.ByIface[slug])
		}
		e.Values = append(e.Values, v)
	}
}

// count returns how many entries are in state.
func (r PlanReport) count(state string) int {
	n := 0
	for _, e := range r.Entries {
		if e.State == state {
			n++
		}
	}
	return n
}

// Counts returns how many entries are ready, waiting and ignored.
func (r PlanReport) Counts() (ready, waiting, ignored int) {
	for _, e := range r.Entries {
		switch e.State {
		case PlanReady:
			ready++
		case PlanWaiting:
			waiting++
		case PlanIgnored:
			ignored++
		}
	}
	return ready, waiting, ignored
}

// WriteText prints the report as a table: state, kind, number of files, total
// size, key, and the reason for what waits or is ignored. Names, reasons
// and values are escaped (printable.String): a file name with a tab or a
// line break cannot break the table, nor one with a control character act
// on the terminal.
func (r PlanReport) WriteText(w io.Writer) error {
	ready, waiting, ignored := r.Counts()
	recorded := ""
	if n := r.count(PlanRecorded); n > 0 {
		recorded = fmt.Sprintf(", %d already recorded", n)
	}
	if _, err := fmt.Fprintf(w, "%s (group = %s): %d ready, %d waiting, %d ignored%s\n", printable.String(r.Watch), printable.String(string(r.Group)), ready, waiting, ignored, recorded); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	if len(r.Entries) == 0 {
		_, err := fmt.Fprintln(w, "  (no files)")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STATE\tKIND\tFILES\tSIZE\tIMAGE\tWHY")
	for _, e := range r.Entries {
		var size int64
		for _, f := range e.Files {
			size += f.Size
		}
		kind, name := string(e.Kind), e.Key
		if kind == "" {
			kind = "-"
		}
		if e.Label != "" {
			kind, name = "dicom", e.Label
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%s\t%s\t%s\n", printable.String(e.State), printable.String(kind), len(e.Files), bytesize.Format(size),
			printable.String(name), printable.String(e.Reason))
		if e.Item != "" {
			fmt.Fprintf(tw, "  \t\t\t\t  adds to item %s (%s)\t\n", printable.String(e.Item), ItemFile)
		}
		for _, v := range e.Values {
			what := strings.Join(v.Files, ", ")
			if v.JSON != "" {
				what = v.JSON + " from " + what
			}
			if v.Kind != "" {
				what += " (" + string(v.Kind) + ")"
			}
			fmt.Fprintf(tw, "  \t\t\t\t  %s ← %s\t\n", printable.String(v.Interface), printable.String(what))
		}
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write plan: %w", err)
	}
	return nil
}
