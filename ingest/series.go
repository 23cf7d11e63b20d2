package ingest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// A DICOM series' item is keyed by the series (its title), and each time
// files of the series arrive the item's value is replaced by what is sent.
// So the value is replaced only by the same or a more complete series:
// a late file makes the whole series go again, gathered from where the
// files that landed before are now (gatherSeries), and a series that the
// item already holds whole is not sent again (seriesHeld).

// gatherSeries returns files with the files that the last record of the
// same series to land sent and that are no longer in the drop folder
// (after_upload = "move" took them to done_dir) added, marked Gathered,
// so that the item's value is replaced by the whole series, not by the
// late files alone. When a file that landed cannot be found (deleted by
// after_upload = "delete", or moved away since), the image fails, naming
// the series, the item and what to do: the item keeps what it holds.
// want maps a gathered file's path to the SHA-256 it was sent with.
func (pl *planner) gatherSeries(img *state.Image, w Watch, files []state.File) ([]state.File, map[string]string, error) {
	prev, err := pl.lastLanded(img)
	if err != nil || prev == nil {
		return files, nil, err
	}
	have := make(map[string]bool, len(files))
	for _, f := range files {
		have[f.Rel] = true
	}
	out := slices.Clone(files)
	want := map[string]string{}
	var missing []string
	for _, f := range prev.Files {
		if have[f.Rel] {
			continue
		}
		where := sentFileNow(prev, img.Watch, f)
		if where == "" {
			missing = append(missing, f.Rel)
			continue
		}
		g := state.File{Rel: f.Rel, Path: where, Size: f.Size, ModTime: f.ModTime, Gathered: true}
		out = append(out, g)
		want[where] = f.SHA256
		have[f.Rel] = true
	}
	if len(missing) > 0 {
		why := "they are no longer where they were moved to"
		switch {
		case w.AfterUpload == watch.AfterUploadDelete:
			why = "after_upload = \"delete\" removed them after upload"
		case prev.MovedTo != "":
			why = "they are no longer in " + prev.MovedTo
		}
		return nil, nil, inputErrorf("DICOM series %s: %d file(s) arrived after its archive item %s was sent with %d, and %d of those (%s) "+
			"cannot be gathered to send the whole series again: %s. The item keeps the series it holds; these files were not sent, "+
			"since alone they would replace it with fewer slices. To complete the item, put every file of the series back in the "+
			"drop folder and run 'gcingest retry %d'",
			seriesName(img), len(files), prev.ItemPK, len(prev.Files), len(missing), strings.Join(firstN(missing, 3), ", "), why, img.ID)
	}
	slices.SortFunc(out, func(a, b state.File) int { return strings.Compare(a.Rel, b.Rel) })
	return out, want, nil
}

// lastLanded returns the newest other record of img's series whose files
// reached its item (done, finished or duplicate, with an item), or nil.
func (pl *planner) lastLanded(img *state.Image) (*state.Image, error) {
	recs, err := pl.store.ByKey(img.Watch, img.Key)
	if err != nil {
		return nil, err
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := &recs[i]
		if r.ID == img.ID || r.ItemPK == "" || r.ID > img.ID {
			continue
		}
		switch r.State {
		case state.Done, state.Finished, state.Duplicate:
			return r, nil
		}
	}
	return nil, nil
}

// sentFileNow returns where the file f that prev sent is now, outside the
// drop folder, or "": in prev's move target, or where it was gathered from
// (a file gathered before stays where it was). A file still in the drop
// folder would be in the group the grouper returned, were it still of
// this series.
func sentFileNow(prev *state.Image, root string, f state.File) string {
	var where []string
	if prev.MovedTo != "" {
		where = append(where, filepath.Join(prev.MovedTo, filepath.FromSlash(f.Rel)))
	}
	if f.Gathered {
		where = append(where, f.Path)
	}
	for _, p := range where {
		if within(root, p) {
			continue
		}
		if fi, err := os.Lstat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}

// within reports whether p is root or below it.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(slices.Clone(s[:n]), "…")
	}
	return s
}

// seriesName names img's series for people (in messages that stay on this
// machine): the folder its files are in.
func seriesName(img *state.Image) string {
	return "in " + titlePath(img.Key, img.Files)
}

// seriesHeld decides, before anything of a DICOM series is uploaded,
// whether the item titled for it already holds it: the server's image
// under our interface names the series UID (as sent: the de-identified one
// when the series is de-identified) and its depth (the slices: files ×
// frames, panimg image_builders/dicom.py). The same series with as many
// slices is a duplicate (after the state file was lost, say); with more
// slices than we have, sending would shrink the item: the image fails,
// naming the item. Anything else goes on and is sent.
func (s *steps) seriesHeld(ctx context.Context, img *state.Image, w Watch) (bool, error) {
	if img.Title == "" || len(img.Values) != 1 || img.Values[0].Kind != state.ValueImage || img.Values[0].SocketKind == KindDICOMImageSet {
		return false, nil
	}
	it, err := s.itemTitled(ctx, img, w)
	if err != nil || it == nil {
		return false, err
	}
	values := state.CloneValues(img.Values)
	v := &values[0]
	ref := valueNow(it, v)
	if ref == "" || strings.HasPrefix(ref, "json:") {
		return false, nil
	}
	im, err := s.api.Image(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("read the image %s of item %s: %w", ref, it.PK, err)
	}
	series, slices, err := s.plan.seriesOf(ctx, img, w)
	if err != nil || im.SeriesInstanceUID == "" || im.SeriesInstanceUID != series {
		return false, err
	}
	depth := 1
	if im.Depth != nil && *im.Depth > 0 {
		depth = *im.Depth
	}
	switch {
	case depth == slices:
		v.Prev, v.Confirmed = ref, true
		return true, s.markDuplicate(ctx, img, w, it, cloneUploads(img.Uploads), values)
	case depth > slices:
		return false, inputErrorf("DICOM series %s: archive item %s already holds this series with %d slices; these %d files would replace it "+
			"with fewer, so they were not sent. To complete the item, put every file of the series in the drop folder together and "+
			"run 'gcingest retry %d'", seriesName(img), it.PK, depth, slices, img.ID)
	}
	return false, nil
}

// seriesOf returns the SeriesInstanceUID img's files are sent with (the
// de-identified one when they are de-identified) and their slices, counted
// as the server counts them (files × frames).
func (pl *planner) seriesOf(ctx context.Context, img *state.Image, w Watch) (string, int, error) {
	series, slices := "", 0
	for _, f := range img.Files {
		h, err := readHeaderOf(f.Path)
		if err != nil {
			return "", 0, err
		}
		if series == "" {
			series = h.SeriesInstanceUID
		}
		slices += max(h.NumberOfFrames, 1)
	}
	deid, err := pl.deidentifies(ctx, img, w)
	if err != nil || !deid {
		return series, slices, err
	}
	secret, err := pl.secret.get()
	if err != nil {
		return "", 0, err
	}
	d, err := dicom.NewDeidentifier(secret, dicom.WithSeriesKey(img.Key))
	if err != nil {
		return "", 0, err
	}
	return d.SeriesUID(), slices, nil
}

// readHeaderOf reads the DICOM header of the file at name.
func readHeaderOf(name string) (dicom.Header, error) {
	f, _, err := openSource(name, "before upload")
	if err != nil {
		return dicom.Header{}, err
	}
	defer f.Close()
	h, err := dicom.ReadHeader(f)
	if err != nil {
		return dicom.Header{}, inputErrorf("DICOM file %s cannot be read: %v; its series was not sent", name, err)
	}
	return h, nil
}
