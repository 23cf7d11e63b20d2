package group

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// Names with a meaning of their own at the top of an item folder (matched
// without regard to case, before any [watch.values] pattern).
const (
	ValuesFile = "values.json" // JSON values by interface slug
	ItemFile   = "item.txt"    // the pk of an existing item to add the values to
)

// MaxSmallFile bounds values.json, item.txt and JSON files sent as values:
// they are read into memory.
const MaxSmallFile = 16 << 20

// Layout is which file of an item folder goes where, decided from names
// alone (plus the content of values.json and item.txt).
type Layout struct {
	Main      []File                     // the main image's files: not matched by any pattern
	ByIface   map[string][]File          // pattern matches by interface slug
	Sources   map[string]string          // interface slug → the pattern that sent files to it
	JSON      map[string]json.RawMessage // values.json entries
	JSONFile  *File                      // values.json itself
	ItemPK    string                     // from item.txt
	Unmatched []string                   // patterns that matched no file (normal for optional values)
}

// Slugs returns the interfaces of the layout's pattern and JSON values, sorted.
func (l *Layout) Slugs() []string {
	var out []string
	for s := range l.ByIface {
		out = append(out, s)
	}
	for s := range l.JSON {
		out = append(out, s)
	}
	sort.Strings(out)
	return out
}

// LayoutFolder sorts the files of the folder item key by name: values.json
// and item.txt at its top, files matched by a [watch.values] pattern (on the
// path relative to the folder, or on the base name), and the rest, which is
// the main image. read returns a small file's content (the pipeline checks it
// against the hash). Every problem a user must fix is a *Problem.
func LayoutFolder(w watch.Spec, key string, files []File, read func(File) ([]byte, error)) (*Layout, error) {
	l := &Layout{ByIface: map[string][]File{}, Sources: map[string]string{}}
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
				return nil, problemf("%s in %s: %v", ValuesFile, key, err)
			}
			ff := f
			l.JSON, l.JSONFile = vals, &ff
			continue
		case strings.EqualFold(in, ItemFile):
			b, err := read(f)
			if err != nil {
				return nil, err
			}
			pk := strings.TrimSpace(string(b))
			if pk == "" || len(pk) > 100 || strings.ContainsAny(pk, "/\\?#% \t\r\n") {
				return nil, problemf("%s in %s must hold the pk of an archive item and nothing else; it holds %q", ItemFile, key, truncate(pk, 60))
			}
			l.ItemPK = pk
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
				return nil, problemf("%s matches [watch.values] %q (→ %s) and %q (→ %s); a file can go to one interface only: make the patterns exclusive",
					f.Rel, pat, slug, p, s)
			}
		}
		if slug == "" {
			l.Main = append(l.Main, f)
			continue
		}
		l.ByIface[slug] = append(l.ByIface[slug], f)
		if _, ok := l.Sources[slug]; !ok {
			l.Sources[slug] = pat
		}
	}
	for _, p := range pats {
		if !used[p] {
			l.Unmatched = append(l.Unmatched, p)
		}
	}
	// One value per interface: the same slug from two sources is a mistake.
	for slug := range l.JSON {
		if _, ok := l.ByIface[slug]; ok {
			return nil, problemf("%s in %s gives a value for %s, and files matching %q go there too; one interface takes one value",
				ValuesFile, key, slug, l.Sources[slug])
		}
		if slug == w.Interface && len(l.Main) > 0 {
			return nil, problemf("%s in %s gives a value for %s, the watch's interface for the main image; one interface takes one value", ValuesFile, key, slug)
		}
	}
	if _, ok := l.ByIface[w.Interface]; ok && len(l.Main) > 0 {
		return nil, problemf("%s: files matching %q go to %s, which is also the watch's interface for the main image (%s); one interface takes one value",
			key, l.Sources[w.Interface], w.Interface, relNames(l.Main))
	}
	if len(l.Main) == 0 && l.ItemPK == "" {
		return nil, problemf("%s has no main image for %s: every file matched a [watch.values] pattern; a new item needs its image (or add %s naming an existing item)",
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

func relNames(files []File) string {
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = f.Rel
	}
	return strings.Join(names, ", ")
}

// ImageKind groups files (below root) by the auto rules (format, .mhd
// pairs, DICOM series) and returns how they go to the server when they make
// exactly one image; otherwise a *Problem that says what they make instead.
// The files are taken as they were observed: settled.
func ImageKind(root, what string, files []File) (Kind, error) {
	g := NewGrouper(watch.Spec{Path: root, Group: watch.GroupAuto}, nil)
	now := time.Now()
	for _, f := range files {
		g.seen(f.Path, f.Size, f.ModTime, now)
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
		return "", problemf("%s: %s", what, strings.Join(problems, "; "))
	}
	if n := len(ev.ready); n != 1 {
		keys := make([]string, n)
		for i, b := range ev.ready {
			keys[i] = b.key
		}
		return "", problemf("%s: the files make %d images (%s); an interface takes exactly one image", what, n, strings.Join(keys, ", "))
	}
	return ev.ready[0].kind, nil
}

// ReadSmall reads a small file of a folder (values.json, item.txt, a JSON
// file sent as a value), at most MaxSmallFile bytes.
func ReadSmall(f File) ([]byte, error) {
	if f.Size > MaxSmallFile {
		return nil, problemf("%s is %d bytes; files read as values may have at most %d", f.Path, f.Size, MaxSmallFile)
	}
	b, err := os.ReadFile(f.Path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, problemf("%s was deleted before upload", f.Path)
	case errors.Is(err, os.ErrPermission):
		return nil, problemf("cannot read %s: permission denied", f.Path)
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", f.Path, err)
	}
	return b, nil
}
