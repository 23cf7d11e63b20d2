package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// jsonKinds are the socket kinds whose values are JSON (docs/ARCHITECTURE.md,
// "One item, its values").
var jsonKinds = map[string]bool{
	"String": true, "Integer": true, "Float": true, "Bool": true, "Anything": true, "Chart": true,
	"2D bounding box": true, "Multiple 2D bounding boxes": true, "Distance measurement": true,
	"Multiple distance measurements": true, "Point": true, "Multiple points": true, "Polygon": true,
	"Multiple polygons": true, "Line": true, "Multiple lines": true, "Angle": true, "Multiple angles": true,
	"Ellipse": true, "Multiple ellipses": true, "Three-point angle": true, "Multiple three-point angles": true,
	"Affine transform registration": true, "Choice": true, "Multiple choice": true,
}

// isJSONSocket reports whether the socket holds JSON (stored in the
// database or, with super_kind File, as a .json file).
func isJSONSocket(s *gcapi.Interface) bool {
	return jsonKinds[s.Kind] || (s.SuperKind != gcapi.SuperKindImage && strings.HasSuffix(s.RelativePath, ".json"))
}

// checkJSONKind checks a JSON value against the simple kinds' schemas the
// server applies, so a wrong type fails before anything is uploaded. Other
// kinds take any JSON except null (which the server reads as "no value").
func checkJSONKind(kind string, raw json.RawMessage) error {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return fmt.Errorf("not JSON (%v)", err)
	}
	want := ""
	switch kind {
	case "Float":
		if _, ok := v.(float64); !ok {
			want = "a number"
		}
	case "Integer":
		if n, ok := v.(float64); !ok || n != math.Trunc(n) {
			want = "an integer"
		}
	case "String":
		if _, ok := v.(string); !ok {
			want = "a string"
		}
	case "Bool":
		if _, ok := v.(bool); !ok {
			want = "true or false"
		}
	default:
		if v == nil {
			want = "a value, not null"
		}
	}
	if want != "" {
		got := string(raw)
		if len(got) > 60 {
			got = got[:60] + "…"
		}
		return fmt.Errorf("a %s interface needs %s, not %s", kind, want, got)
	}
	return nil
}

// readChecked reads a small file that was hashed and checks it still has
// the hashed content.
func readChecked(f state.File) ([]byte, error) {
	b, err := group.ReadSmall(groupFile(f))
	if err != nil {
		return nil, err
	}
	if sum := sha256.Sum256(b); f.SHA256 != "" && hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, &changedError{file: f.Path}
	}
	return b, nil
}

// groupFiles is files as package group sees them.
func groupFiles(files []state.File) []group.File {
	out := make([]group.File, len(files))
	for i, f := range files {
		out[i] = groupFile(f)
	}
	return out
}

// relNames lists the files' relative paths for a message.
func relNames(files []state.File) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Rel
	}
	return strings.Join(names, ", ")
}

// groupFile is f as package group sees it.
func groupFile(f state.File) group.File {
	return group.File{Path: f.Path, Rel: f.Rel, Size: f.Size, ModTime: f.ModTime}
}

// stateFiles returns the recorded files (from all, by Rel) that gfs names.
func stateFiles(gfs []group.File, all []state.File) []state.File {
	out := make([]state.File, 0, len(gfs))
	for _, g := range gfs {
		for _, f := range all {
			if f.Rel == g.Rel {
				out = append(out, f)
				break
			}
		}
	}
	return out
}

// changedError says a file changed after it was hashed: hash again.
type changedError struct{ file string }

func (e *changedError) Error() string { return e.file + " changed after it was hashed" }

// planFolder decides every value of a folder item and the uploads they
// need, checking each against its interface on the server, and (for a
// folder naming an existing item) that no value would be replaced without
// replace = true. Nothing is uploaded or changed on the server.
func (p *Pipeline) planFolder(ctx context.Context, img *state.Image, w Watch, files []state.File) ([]state.Value, []state.Upload, string, error) {
	l, err := group.LayoutFolder(w.Grouping(), img.Key, groupFiles(files), func(f group.File) ([]byte, error) {
		return readChecked(stateFiles([]group.File{f}, files)[0])
	})
	if err != nil {
		return nil, nil, "", err
	}
	values, uploads, err := p.planValues(ctx, img, w, l, files)
	if err != nil {
		return nil, nil, "", err
	}
	if l.ItemPK != "" {
		if err := p.checkTarget(ctx, w, l.ItemPK, values); err != nil {
			return nil, nil, "", err
		}
	}
	return values, uploads, l.ItemPK, nil
}

// checkTarget checks that the item named by item.txt exists in the watch's
// archive and, unless the watch may replace values, holds none of ours.
func (p *Pipeline) checkTarget(ctx context.Context, w Watch, pk string, values []state.Value) error {
	ar, err := p.server.archive(ctx, w.Archive)
	if err != nil {
		return err
	}
	it, err := p.api.ArchiveItem(ctx, pk)
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

func (p *Pipeline) planValues(ctx context.Context, img *state.Image, w Watch, l *group.Layout, files []state.File) ([]state.Value, []state.Upload, error) {
	for _, pat := range l.Unmatched {
		// Optional values are normal: a folder without a report, say.
		p.log.Info("no file in the folder matches a [watch.values] pattern", "id", img.ID, "folder", img.Key, "pattern", pat, "interface", w.Values[pat])
	}
	var values []state.Value
	var uploads []state.Upload
	addUpload := p.addUpload(&uploads)
	// addImage plans files as one image for slug.
	addImage := func(slug, what string, fs []state.File) error {
		kind, err := group.ImageKind(w.Path, img.Key+": "+what, groupFiles(fs))
		if err != nil {
			return err
		}
		v, err := imageValue(img.Key, slug, kind, fs, p.spoolPath(img.ID, len(uploads), ".zip"), zipName(img.Key, fs, nil), addUpload)
		if err != nil {
			return err
		}
		values = append(values, v)
		return nil
	}
	if len(l.Main) > 0 {
		s, err := p.server.socket(ctx, w.Interface)
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
		s, err := p.server.socket(ctx, slug)
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
			v, err := p.jsonValue(img, s, raw, &uploads, addUpload)
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
func (p *Pipeline) jsonValue(img *state.Image, s *gcapi.Interface, raw json.RawMessage, uploads *[]state.Upload, add func(state.Upload) int) (state.Value, error) {
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
		v.Uploads = []int{add(state.Upload{Filename: name, Path: p.spoolPath(img.ID, len(*uploads), ".json"), Size: int64(len(raw))})}
	default:
		return v, inputErrorf("%s in %s gives %s a JSON value, but it is a %s interface (%s): put the file in the folder and map it under [watch.values]",
			group.ValuesFile, img.Key, s.Slug, s.Kind, strings.ToLower(s.SuperKind))
	}
	if err := checkJSONKind(s.Kind, raw); err != nil {
		return v, inputErrorf("%s in %s: %s: %v", group.ValuesFile, img.Key, s.Slug, err)
	}
	return v, nil
}

// jsonEqual compares two JSON texts by meaning (1.90 equals 1.9).
func jsonEqual(a, b json.RawMessage) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return bytes.Equal(a, b)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// FolderChecker applies to a folder item every rule the pipeline applies
// when it plans one (values.json, item.txt, [watch.values], the sockets'
// kinds, the JSON values' types), without recording or sending anything.
// `gcingest check` and `gcingest plan` use it, so they cannot disagree with
// run. Sockets are asked once per checker.
type FolderChecker struct{ p *Pipeline }

// NewFolderChecker returns a checker that asks api about sockets (and about
// the item an item.txt names).
func NewFolderChecker(api API, log *slog.Logger) *FolderChecker {
	return &FolderChecker{p: NewPipeline(PipelineConfig{}, nil, api, log)}
}

// Check reports what run would refuse in the folder item key of watch w. An
// error for which IsFolderProblem is true is the folder's to fix; another
// (the network, the server) says nothing about the folder.
func (c *FolderChecker) Check(ctx context.Context, w Watch, key string, files []group.File) error {
	sf := make([]state.File, len(files))
	for i, f := range files {
		sf[i] = state.File{Rel: f.Rel, Path: f.Path, Size: f.Size, ModTime: f.ModTime}
	}
	img := &state.Image{Watch: w.Path, Key: key, Kind: string(KindFolder), Files: sf}
	_, _, _, err := c.p.planFolder(ctx, img, w, sf)
	return err
}

// IsFolderProblem reports whether err is a problem of the files themselves,
// which the pipeline fails the item for without retrying.
func IsFolderProblem(err error) bool {
	var ie *inputError
	var gp *group.Problem
	return errors.As(err, &ie) || errors.As(err, &gp)
}

// joinFiles records files, the group's files as seen now, on the image id
// that has not reached its item yet (a file added to a folder whose record
// is pending, say): the image is planned again with them (stepHash), so no
// file is left out. If the image reached its item in the meantime, the
// group is submitted again and becomes a new record.
func (p *Pipeline) joinFiles(ctx context.Context, g Group, id uint64, files []state.File) error {
	joined := false
	_, err := p.store.Update(id, func(r *state.Image) error {
		if beforeItem(r) {
			r.Joined, joined = files, true
		}
		return nil
	})
	if err != nil {
		p.stop(err)
		return fmt.Errorf("submit %s: %w", g.Key, err)
	}
	if !joined {
		return p.Submit(ctx, g)
	}
	p.log.Info("files of a recorded image changed before it reached its item; planning it again", "id", id, "key", g.Key, "files", len(files))
	p.enqueue(id, time.Time{})
	return nil
}

// joinedFile returns a file of the image's group seen after it was
// planned (state.Image.Joined), read from the state file, or "" when none
// is: the image must be planned again before it reaches its item.
func (p *Pipeline) joinedFile(img *state.Image) (string, error) {
	cur, err := p.store.Get(img.ID)
	if err != nil {
		return "", &storeError{err}
	}
	if len(cur.Joined) == 0 {
		return "", nil
	}
	for _, f := range cur.Joined {
		if !slices.ContainsFunc(img.Files, func(g state.File) bool { return g.Rel == f.Rel }) {
			return f.Path, nil
		}
	}
	return cur.Joined[0].Path, nil
}
