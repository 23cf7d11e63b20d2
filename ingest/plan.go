package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// planner decides what an item gets from its group's files: the files
// themselves (a late DICOM slice gathers its whole series, series.go), its
// values, the uploads they need, the item an item.txt names, and whether
// its DICOM is de-identified. The hash step (stepHash) plans each image
// with it, later steps ask it again what it decided, and `gcingest check`
// and `gcingest plan` use it too (FolderChecker), so they cannot disagree
// with run. It reads the server (sockets, an item.txt's item) and the
// state file but changes and records nothing: the hash step commits what
// it decides.
type planner struct {
	store    Store // earlier records of a DICOM series (gatherSeries)
	api      API
	server   *serverCache
	secret   *deidSecret
	log      *slog.Logger
	spoolDir string // where multi-file uploads and JSON files are built
	partSize int64  // stamped on every upload, so a resume uses the same parts
	now      func() time.Time
}

func newPlanner(cfg PipelineConfig, store Store, api API, server *serverCache, secret *deidSecret, log *slog.Logger) *planner {
	return &planner{store: store, api: api, server: server, secret: secret, log: log, spoolDir: cfg.SpoolDir, partSize: cfg.PartSize, now: cfg.Now}
}

// item decides the item's values and the uploads they need from the
// group's files: a lone image is one image value under the watch's
// interface; a folder is laid out into its values (planner.folder).
// This is the one place the group's kind matters: every step after it
// works on values and uploads alone.
//
// secret is the de-identification secret when img's DICOM is
// de-identified, else nil: what leaves then is named by keyed hashes only.
func (pl *planner) item(ctx context.Context, img *state.Image, w Watch, files []state.File, secret []byte) ([]state.Value, []state.Upload, string, error) {
	switch Kind(img.Kind) {
	case KindFolder:
		return pl.folder(ctx, img, w, files)
	case KindSingle, KindMHD, KindZip:
		var uploads []state.Upload
		add := pl.addUpload(&uploads)
		// DICOM for a DICOM Image Set socket: one de-identified file per upload (deid.go).
		if v, ok, err := pl.dicomSet(ctx, img, w, files, add); ok || err != nil {
			return []state.Value{v}, uploads, "", err
		}
		v, err := imageValue(img.Key, w.Interface, Kind(img.Kind), files, filepath.Join(pl.spoolDir, fmt.Sprintf("%06d.zip", img.ID)), zipName(img.Key, files, secret), add)
		if err != nil {
			return nil, nil, "", err
		}
		return []state.Value{v}, uploads, "", nil
	}
	return nil, nil, "", inputErrorf("%s: groups of kind %q are not handled by the pipeline", img.Key, img.Kind)
}

// addUpload returns a function that appends an upload, stamped with the
// part size and the intent time, to uploads and returns its index.
func (pl *planner) addUpload(uploads *[]state.Upload) func(state.Upload) int {
	now := pl.now().UTC()
	return func(u state.Upload) int {
		u.PartSize, u.IntentAt = pl.partSize, now
		u.Filename = uploadName(u.Filename)
		*uploads = append(*uploads, u)
		return len(*uploads) - 1
	}
}

// spoolPath is where upload n of image id is built: a ZIP of several
// files, or a JSON value sent as a file.
func (pl *planner) spoolPath(id uint64, n int, ext string) string {
	return filepath.Join(pl.spoolDir, fmt.Sprintf("%06d-%d%s", id, n, ext))
}

// imageValue plans files as one image for the interface slug: one upload
// per file (basenames unchanged: the server pairs an .mhd with its data
// file by name), or, for a kind that needs it, one deterministic ZIP of
// them all built at spool.
func imageValue(key, slug string, kind Kind, files []state.File, spool, zipName string, add func(state.Upload) int) (state.Value, error) {
	v := state.Value{Interface: slug, Kind: state.ValueImage}
	for _, f := range files {
		v.Files = append(v.Files, f.Rel)
	}
	if kind == KindZip {
		v.Uploads = []int{add(state.Upload{Filename: zipName, Path: spool, ZipOf: slices.Clone(v.Files)})}
		return v, nil
	}
	seen := map[string]bool{}
	for _, f := range files {
		name := path.Base(f.Rel)
		if kind == KindMHD && uploadName(name) != name {
			// The server pairs the header with its data file by the
			// names the header holds: a shortened name breaks the pair.
			return v, inputErrorf("%s: %s is longer than the server's %d-byte upload filename limit (or not valid UTF-8); an .mhd pair must keep its names: rename both files", key, name, maxUploadName)
		}
		if seen[name] {
			return v, inputErrorf("%s: two files named %s in one image; the server needs unique names", key, name)
		}
		seen[name] = true
		v.Uploads = append(v.Uploads, add(state.Upload{Filename: name, Path: f.Path, Size: f.Size}))
	}
	return v, nil
}

// dicomSet plans a DICOM group for a socket of kind DICOM Image Set
// as Grand Challenge's client does (gcapi/create_strategies.py,
// DICOMImageSetFileCreateStrategy): every file de-identified and sent as
// its own upload named dicom_image_<i>.dcm, the value's user_uploads with
// image_name, here the item's title. ok is false for anything else.
func (pl *planner) dicomSet(ctx context.Context, img *state.Image, w Watch, files []state.File, add func(state.Upload) int) (state.Value, bool, error) {
	v := state.Value{Interface: w.Interface, Kind: state.ValueImage}
	if !group.IsDICOMKey(img.Key) || w.Group == watch.GroupFolder {
		return v, false, nil
	}
	s, err := pl.server.socket(ctx, w.Interface)
	if err != nil || s.Kind != KindDICOMImageSet {
		return v, false, err
	}
	v.SocketKind = s.Kind
	secret, err := pl.secret.get()
	if err != nil {
		return v, false, err
	}
	if v.ImageName, err = renderTitle(w.Title, img.Key, files, secret, true); err != nil {
		return v, false, err
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b state.File) int { return strings.Compare(a.Rel, b.Rel) })
	for i, f := range sorted {
		v.Files = append(v.Files, f.Rel)
		v.Uploads = append(v.Uploads, add(state.Upload{
			Filename: fmt.Sprintf("dicom_image_%d.dcm", i),
			Path:     filepath.Join(pl.spoolDir, fmt.Sprintf("%06d-%d%s", img.ID, i, dicomSetFile)),
			ZipOf:    []string{f.Rel},
		}))
	}
	return v, true, nil
}

// deidentifies reports whether the DICOM of img is de-identified before it
// leaves the machine: when its watch asks, and always for a socket of kind
// DICOM Image Set (as Grand Challenge's clients do).
func (pl *planner) deidentifies(ctx context.Context, img *state.Image, w Watch) (bool, error) {
	if !group.IsDICOMKey(img.Key) {
		return false, nil
	}
	if w.Deidentify {
		return true, nil
	}
	s, err := pl.server.socket(ctx, mainInterface(img, w))
	if err != nil {
		return false, err
	}
	return s.Kind == KindDICOMImageSet, nil
}

// folder decides every value of a folder item and the uploads they
// need, checking each against its interface on the server, and (for a
// folder naming an existing item) that no value would be replaced without
// replace = true. Nothing is uploaded or changed on the server.
func (pl *planner) folder(ctx context.Context, img *state.Image, w Watch, files []state.File) ([]state.Value, []state.Upload, string, error) {
	l, err := group.LayoutFolder(w.Spec, img.Key, groupFiles(files), func(f group.File) ([]byte, error) {
		return readChecked(stateFiles([]group.File{f}, files)[0])
	})
	if err != nil {
		return nil, nil, "", err
	}
	values, uploads, err := pl.folderValues(ctx, img, w, l, files)
	if err != nil {
		return nil, nil, "", err
	}
	if l.ItemPK != "" {
		if err := pl.checkTarget(ctx, w, l.ItemPK, values); err != nil {
			return nil, nil, "", err
		}
	}
	return values, uploads, l.ItemPK, nil
}

// checkTarget checks that the item named by item.txt exists in the watch's
// archive and, unless the watch may replace values, holds none of ours.
func (pl *planner) checkTarget(ctx context.Context, w Watch, pk string, values []state.Value) error {
	ar, err := pl.server.archive(ctx, w.Archive)
	if err != nil {
		return err
	}
	it, err := pl.api.ArchiveItem(ctx, pk)
	if gcapi.IsNotFound(err) {
		return inputErrorf("%s names archive item %s, which does not exist or this token may not see", group.ItemFile, pk)
	}
	if err != nil {
		return fmt.Errorf("get archive item %s named in %s: %w", pk, group.ItemFile, err)
	}
	if it.Archive != "" && it.Archive != ar.APIURL {
		return inputErrorf("%s names archive item %s, which is not in archive %s", group.ItemFile, pk, w.Archive)
	}
	if w.Replace {
		return nil
	}
	for i := range values {
		if valueNow(it, &values[i]) != "" {
			return inputErrorf("item %s already has a value for %s; set replace = true on the watch to replace it", pk, values[i].Interface)
		}
	}
	return nil
}

// folderValues plans the values of a folder item laid out as l: the main
// image under the watch's interface, then each socket the layout names,
// planned as the server's socket kind takes it (an image, one file, or a
// JSON value). Sockets are asked of the server once per run.
func (pl *planner) folderValues(ctx context.Context, img *state.Image, w Watch, l *group.Layout, files []state.File) ([]state.Value, []state.Upload, error) {
	for _, pat := range l.Unmatched {
		// Optional values are normal: a folder without a report, say.
		pl.log.Info("no file in the folder matches a [watch.values] pattern", "id", img.ID, "folder", img.Key, "pattern", pat, "interface", w.Values[pat])
	}
	var values []state.Value
	var uploads []state.Upload
	addUpload := pl.addUpload(&uploads)
	// addImage plans files as one image for slug.
	addImage := func(slug, what string, fs []state.File) error {
		kind, err := group.ImageKind(w.Path, img.Key+": "+what, groupFiles(fs))
		if err != nil {
			return err
		}
		v, err := imageValue(img.Key, slug, kind, fs, pl.spoolPath(img.ID, len(uploads), ".zip"), zipName(img.Key, fs, nil), addUpload)
		if err != nil {
			return err
		}
		values = append(values, v)
		return nil
	}
	if len(l.Main) > 0 {
		s, err := pl.server.socket(ctx, w.Interface)
		if err != nil {
			return nil, nil, err
		}
		if s.SuperKind != gcapi.SuperKindImage {
			return nil, nil, inputErrorf("the watch's interface %s is a %s interface; the main image needs an image interface", w.Interface, s.Kind)
		}
		if err := addImage(w.Interface, "main image for "+w.Interface, stateFiles(l.Main, files)); err != nil {
			return nil, nil, err
		}
		values[len(values)-1].SocketKind = s.Kind
	}
	for _, slug := range l.Slugs() {
		s, err := pl.server.socket(ctx, slug)
		if err != nil {
			var ie *inputError
			if errors.As(err, &ie) {
				from := fmt.Sprintf("[watch.values] %q", l.Sources[slug])
				if _, ok := l.JSON[slug]; ok {
					from = group.ValuesFile
				}
				return nil, nil, inputErrorf("%s: %s names %s, which the server does not know", img.Key, from, slug)
			}
			return nil, nil, err
		}
		if raw, ok := l.JSON[slug]; ok {
			v, err := pl.jsonValue(img, s, raw, &uploads, addUpload)
			if err != nil {
				return nil, nil, err
			}
			values = append(values, v)
			continue
		}
		fs := stateFiles(l.ByIface[slug], files)
		what := fmt.Sprintf("files matching %q for %s", l.Sources[slug], slug)
		switch {
		case s.SuperKind == gcapi.SuperKindImage:
			if err := addImage(slug, what, fs); err != nil {
				return nil, nil, err
			}
		case len(fs) != 1:
			return nil, nil, inputErrorf("%s: %d files match %q for %s (%s), a %s interface that takes exactly one file",
				img.Key, len(fs), l.Sources[slug], slug, relNames(fs), s.Kind)
		case s.SuperKind == gcapi.SuperKindValue:
			// A JSON file for a value interface: its content is the value.
			b, err := readChecked(fs[0])
			if err != nil {
				return nil, nil, err
			}
			var c bytes.Buffer
			if err := json.Compact(&c, b); err != nil {
				return nil, nil, inputErrorf("%s goes to %s, a %s interface, but is not JSON (%v)", fs[0].Rel, slug, s.Kind, err)
			}
			if err := checkJSONKind(s.Kind, c.Bytes()); err != nil {
				return nil, nil, inputErrorf("%s for %s: %v", fs[0].Rel, slug, err)
			}
			values = append(values, state.Value{Interface: slug, Kind: state.ValueJSON, Files: []string{fs[0].Rel}, JSON: c.Bytes()})
		default:
			values = append(values, state.Value{Interface: slug, Kind: state.ValueFile, Files: []string{fs[0].Rel},
				Uploads: []int{addUpload(state.Upload{Filename: path.Base(fs[0].Rel), Path: fs[0].Path, Size: fs[0].Size})}})
		}
		values[len(values)-1].SocketKind = s.Kind
	}
	if len(values) == 0 {
		return nil, nil, inputErrorf("%s names item %s in %s but holds no value to add", img.Key, l.ItemPK, group.ItemFile)
	}
	return values, uploads, nil
}

// jsonValue plans one values.json entry: a value for a Value interface, or
// a JSON file upload for a JSON interface kept as a file.
func (pl *planner) jsonValue(img *state.Image, s *gcapi.Interface, raw json.RawMessage, uploads *[]state.Upload, add func(state.Upload) int) (state.Value, error) {
	v := state.Value{Interface: s.Slug, SocketKind: s.Kind, JSON: raw}
	switch {
	case s.SuperKind == gcapi.SuperKindValue:
		v.Kind = state.ValueJSON
	case s.SuperKind == gcapi.SuperKindFile && isJSONSocket(s):
		v.Kind = state.ValueFile
		name := path.Base(s.RelativePath)
		if name == "." || name == "/" || name == "" {
			name = s.Slug + ".json"
		}
		v.Uploads = []int{add(state.Upload{Filename: name, Path: pl.spoolPath(img.ID, len(*uploads), ".json"), Size: int64(len(raw))})}
	default:
		return v, inputErrorf("%s in %s gives %s a JSON value, but it is a %s interface (%s): put the file in the folder and map it under [watch.values]",
			group.ValuesFile, img.Key, s.Slug, s.Kind, strings.ToLower(s.SuperKind))
	}
	if err := checkJSONKind(s.Kind, raw); err != nil {
		return v, inputErrorf("%s in %s: %s: %v", group.ValuesFile, img.Key, s.Slug, err)
	}
	return v, nil
}
