package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/state"
)

// Names with a meaning of their own at the top of an item folder (matched
// without regard to case, before any [watch.values] pattern).
const (
	ValuesFile = "values.json" // JSON values by interface slug
	ItemFile   = "item.txt"    // the pk of an existing item to add the values to
)

// maxSmallFile bounds values.json, item.txt and JSON files sent as values:
// they are read into memory.
const maxSmallFile = 16 << 20

// folderLayout is which file of an item folder goes where, decided from
// names alone (plus the content of values.json and item.txt).
type folderLayout struct {
	main      []state.File               // the main image's files: not matched by any pattern
	byIface   map[string][]state.File    // pattern matches by interface slug
	sources   map[string]string          // interface slug → the pattern that sent files to it
	json      map[string]json.RawMessage // values.json entries
	jsonFile  *state.File                // values.json itself
	itemPK    string                     // from item.txt
	unmatched []string                   // patterns that matched no file (normal for optional values)
}

// slugs returns the interfaces of the layout's pattern and JSON values, sorted.
func (l *folderLayout) slugs() []string {
	var out []string
	for s := range l.byIface {
		out = append(out, s)
	}
	for s := range l.json {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// layoutFolder sorts the files of the folder item key by name: values.json
// and item.txt at its top, files matched by a [watch.values] pattern (on the
// path relative to the folder, or on the base name), and the rest, which is
// the main image. read returns a small file's content (the pipeline checks it
// against the hash). Every problem a user must fix is an inputError.
func layoutFolder(w Watch, key string, files []state.File, read func(state.File) ([]byte, error)) (*folderLayout, error) {
	l := &folderLayout{byIface: map[string][]state.File{}, sources: map[string]string{}}
	pats := make([]string, 0, len(w.Values))
	for p := range w.Values {
		pats = append(pats, p)
	}
	sort.Strings(pats) // same decisions and messages every time
	used := map[string]bool{}
	for _, f := range files {
		in := strings.TrimPrefix(f.Rel, key+"/")
		switch {
		case strings.EqualFold(in, ValuesFile):
			b, err := read(f)
			if err != nil {
				return nil, err
			}
			vals, err := parseValuesJSON(b)
			if err != nil {
				return nil, inputErrorf("%s in %s: %v", ValuesFile, key, err)
			}
			ff := f
			l.json, l.jsonFile = vals, &ff
			continue
		case strings.EqualFold(in, ItemFile):
			b, err := read(f)
			if err != nil {
				return nil, err
			}
			pk := strings.TrimSpace(string(b))
			if pk == "" || len(pk) > 100 || strings.ContainsAny(pk, "/\\?#% \t\r\n") {
				return nil, inputErrorf("%s in %s must hold the pk of an archive item and nothing else; it holds %q", ItemFile, key, truncate(pk, 60))
			}
			l.itemPK = pk
			continue
		}
		slug, pat := "", ""
		for _, p := range pats {
			ok1, _ := path.Match(p, in)
			ok2, _ := path.Match(p, path.Base(in))
			if !ok1 && !ok2 {
				continue
			}
			used[p] = true
			switch s := w.Values[p]; {
			case slug == "":
				slug, pat = s, p
			case s != slug:
				return nil, inputErrorf("%s matches [watch.values] %q (→ %s) and %q (→ %s); a file can go to one interface only: make the patterns exclusive",
					f.Rel, pat, slug, p, s)
			}
		}
		if slug == "" {
			l.main = append(l.main, f)
			continue
		}
		l.byIface[slug] = append(l.byIface[slug], f)
		if _, ok := l.sources[slug]; !ok {
			l.sources[slug] = pat
		}
	}
	for _, p := range pats {
		if !used[p] {
			l.unmatched = append(l.unmatched, p)
		}
	}
	// One value per interface: the same slug from two sources is a mistake.
	for slug := range l.json {
		if _, ok := l.byIface[slug]; ok {
			return nil, inputErrorf("%s in %s gives a value for %s, and files matching %q go there too; one interface takes one value",
				ValuesFile, key, slug, l.sources[slug])
		}
		if slug == w.Interface && len(l.main) > 0 {
			return nil, inputErrorf("%s in %s gives a value for %s, the watch's interface for the main image; one interface takes one value", ValuesFile, key, slug)
		}
	}
	if _, ok := l.byIface[w.Interface]; ok && len(l.main) > 0 {
		return nil, inputErrorf("%s: files matching %q go to %s, which is also the watch's interface for the main image (%s); one interface takes one value",
			key, l.sources[w.Interface], w.Interface, relNames(l.main))
	}
	if len(l.main) == 0 && l.itemPK == "" {
		return nil, inputErrorf("%s has no main image for %s: every file matched a [watch.values] pattern; a new item needs its image (or add %s naming an existing item)",
			key, w.Interface, ItemFile)
	}
	return l, nil
}

// parseValuesJSON reads values.json: one JSON object, interface slug → value.
func parseValuesJSON(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var m map[string]json.RawMessage
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("not a JSON object of values by interface slug (%v)", err)
	}
	if m == nil {
		return nil, errors.New("not a JSON object of values by interface slug (it is null)")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("not a JSON object of values by interface slug (more after the object)")
	}
	for slug, v := range m {
		if slug == "" {
			return nil, errors.New("an empty interface slug")
		}
		var c bytes.Buffer
		if err := json.Compact(&c, v); err != nil {
			return nil, fmt.Errorf("%s: %v", slug, err)
		}
		m[slug] = c.Bytes()
	}
	return m, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

func relNames(files []state.File) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Rel
	}
	return strings.Join(names, ", ")
}

// fixedInfo is an fs.FileInfo made from a recorded size and time, so that
// a Grouper can be fed files already observed.
type fixedInfo struct {
	name string
	size int64
	mod  time.Time
}

func (i fixedInfo) Name() string       { return i.name }
func (i fixedInfo) Size() int64        { return i.size }
func (i fixedInfo) Mode() fs.FileMode  { return 0o644 }
func (i fixedInfo) ModTime() time.Time { return i.mod }
func (i fixedInfo) IsDir() bool        { return false }
func (i fixedInfo) Sys() any           { return nil }

// imageKind groups files by the auto rules (format, .mhd pairs, DICOM
// series) and returns how they go to the server when they make exactly one
// image; otherwise an inputError that says what they make instead.
func imageKind(w Watch, what string, files []state.File) (Kind, error) {
	g := NewGrouper(Watch{Path: w.Path, Group: "auto"}, nil)
	now := time.Now()
	for _, f := range files {
		info := fixedInfo{name: path.Base(f.Rel), size: f.Size, mod: f.ModTime}
		g.Observe(f.Path, info, now)
		g.Observe(f.Path, info, now)
	}
	ev := g.evaluate(now, false)
	var problems []string
	for _, ig := range ev.ignored {
		problems = append(problems, ig.rel+": "+ig.reason)
	}
	for _, b := range ev.waiting {
		problems = append(problems, b.key+": "+b.reason)
	}
	if len(problems) > 0 {
		return "", inputErrorf("%s: %s", what, strings.Join(problems, "; "))
	}
	if n := len(ev.ready); n != 1 {
		keys := make([]string, n)
		for i, b := range ev.ready {
			keys[i] = b.key
		}
		return "", inputErrorf("%s: the files make %d images (%s); an interface takes exactly one image", what, n, strings.Join(keys, ", "))
	}
	return ev.ready[0].kind, nil
}

// jsonKinds are the socket kinds whose values are JSON (gc-api.md §4).
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
		return fmt.Errorf("a %s interface needs %s, not %s", kind, want, truncate(string(raw), 60))
	}
	return nil
}

// socket returns the interface with that slug, asked once per run.
// Unknown slugs are the folder's (or the config's) problem: permanent.
func (p *Pipeline) socket(ctx context.Context, slug string) (*gcapi.Interface, error) {
	p.mu.Lock()
	s := p.sockets[slug]
	p.mu.Unlock()
	if s != nil {
		return s, nil
	}
	s, err := p.api.InterfaceBySlug(ctx, slug)
	if gcapi.IsNotFound(err) {
		return nil, inputErrorf("the server knows no interface %q", slug)
	}
	if err != nil {
		return nil, fmt.Errorf("find interface %s: %w", slug, err)
	}
	p.mu.Lock()
	p.sockets[slug] = s
	p.mu.Unlock()
	return s, nil
}

// readChecked reads a small file that was hashed and checks it still has
// the hashed content.
func readChecked(f state.File) ([]byte, error) {
	if f.Size > maxSmallFile {
		return nil, inputErrorf("%s is %d bytes; files read as values may have at most %d", f.Path, f.Size, maxSmallFile)
	}
	b, err := os.ReadFile(f.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, inputErrorf("%s was deleted before upload", f.Path)
	case errors.Is(err, os.ErrPermission):
		return nil, inputErrorf("cannot read %s: permission denied", f.Path)
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", f.Path, err)
	}
	if sum := sha256.Sum256(b); f.SHA256 != "" && hex.EncodeToString(sum[:]) != f.SHA256 {
		return nil, &changedError{file: f.Path}
	}
	return b, nil
}

// changedError says a file changed after it was hashed: hash again.
type changedError struct{ file string }

func (e *changedError) Error() string { return e.file + " changed after it was hashed" }

// planFolder decides every value of a folder item and the uploads they
// need, checking each against its interface on the server, and (for a
// folder naming an existing item) that no value would be replaced without
// replace = true. Nothing is uploaded or changed on the server.
func (p *Pipeline) planFolder(ctx context.Context, img *state.Image, w Watch, files []state.File) ([]state.Value, []state.Upload, string, error) {
	l, err := layoutFolder(w, img.Key, files, readChecked)
	if err != nil {
		return nil, nil, "", err
	}
	values, uploads, err := p.planValues(ctx, img, w, l)
	if err != nil {
		return nil, nil, "", err
	}
	if l.itemPK != "" {
		if err := p.checkTarget(ctx, w, l.itemPK, values); err != nil {
			return nil, nil, "", err
		}
	}
	return values, uploads, l.itemPK, nil
}

// checkTarget checks that the item named by item.txt exists in the watch's
// archive and, unless the watch may replace values, holds none of ours.
func (p *Pipeline) checkTarget(ctx context.Context, w Watch, pk string, values []state.Value) error {
	ar, err := p.archive(ctx, w.Archive)
	if err != nil {
		return err
	}
	it, err := p.api.ArchiveItem(ctx, pk)
	if gcapi.IsNotFound(err) {
		return inputErrorf("%s names archive item %s, which does not exist or this token may not see", ItemFile, pk)
	}
	if err != nil {
		return fmt.Errorf("get archive item %s named in %s: %w", pk, ItemFile, err)
	}
	if it.Archive != "" && it.Archive != ar.APIURL {
		return inputErrorf("%s names archive item %s, which is not in archive %s", ItemFile, pk, w.Archive)
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

func (p *Pipeline) planValues(ctx context.Context, img *state.Image, w Watch, l *folderLayout) ([]state.Value, []state.Upload, error) {
	for _, pat := range l.unmatched {
		// Optional values are normal: a folder without a report, say.
		p.log.Info("no file in the folder matches a [watch.values] pattern", "id", img.ID, "folder", img.Key, "pattern", pat, "interface", w.Values[pat])
	}
	var values []state.Value
	var uploads []state.Upload
	addUpload := p.addUpload(&uploads)
	// addImage plans files as one image for slug.
	addImage := func(slug, what string, fs []state.File) error {
		kind, err := imageKind(w, img.Key+": "+what, fs)
		if err != nil {
			return err
		}
		v, err := imageValue(img.Key, slug, kind, fs, p.spoolPath(img.ID, len(uploads), ".zip"), addUpload)
		if err != nil {
			return err
		}
		values = append(values, v)
		return nil
	}
	if len(l.main) > 0 {
		s, err := p.socket(ctx, w.Interface)
		if err != nil {
			return nil, nil, err
		}
		if s.SuperKind != gcapi.SuperKindImage {
			return nil, nil, inputErrorf("the watch's interface %s is a %s interface; the main image needs an image interface", w.Interface, s.Kind)
		}
		if err := addImage(w.Interface, "main image for "+w.Interface, l.main); err != nil {
			return nil, nil, err
		}
		values[len(values)-1].SocketKind = s.Kind
	}
	for _, slug := range l.slugs() {
		s, err := p.socket(ctx, slug)
		if err != nil {
			var ie *inputError
			if errors.As(err, &ie) {
				from := fmt.Sprintf("[watch.values] %q", l.sources[slug])
				if _, ok := l.json[slug]; ok {
					from = ValuesFile
				}
				return nil, nil, inputErrorf("%s: %s names %s, which the server does not know", img.Key, from, slug)
			}
			return nil, nil, err
		}
		if raw, ok := l.json[slug]; ok {
			v, err := p.jsonValue(img, s, raw, &uploads, addUpload)
			if err != nil {
				return nil, nil, err
			}
			values = append(values, v)
			continue
		}
		fs := l.byIface[slug]
		what := fmt.Sprintf("files matching %q for %s", l.sources[slug], slug)
		switch {
		case s.SuperKind == gcapi.SuperKindImage:
			if err := addImage(slug, what, fs); err != nil {
				return nil, nil, err
			}
		case len(fs) != 1:
			return nil, nil, inputErrorf("%s: %d files match %q for %s (%s), a %s interface that takes exactly one file",
				img.Key, len(fs), l.sources[slug], slug, relNames(fs), s.Kind)
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
		return nil, nil, inputErrorf("%s names item %s in %s but holds no value to add", img.Key, l.itemPK, ItemFile)
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
			ValuesFile, img.Key, s.Slug, s.Kind, strings.ToLower(s.SuperKind))
	}
	if err := checkJSONKind(s.Kind, raw); err != nil {
		return v, inputErrorf("%s in %s: %s: %v", ValuesFile, img.Key, s.Slug, err)
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
