package ingest

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// DefaultTitle is the item title template when a watch sets none.
const DefaultTitle = "{path} [{hash}]"

// DeidTitle is the item title template of a de-identified image when its
// watch sets none: exports name folders and files after the patient, so a
// de-identified image's title carries the keyed hash alone.
const DeidTitle = "{hash}"

// DeidTitleProblem says why tmpl may not title a de-identified image, or
// nil: {path} and {name} send folder and file names, which scanners and
// PACS exports make of the patient's name and ID; only {hash} (keyed with
// the de-identification secret) and fixed text may leave.
func DeidTitleProblem(tmpl string) error {
	if strings.Contains(tmpl, "{path}") || strings.Contains(tmpl, "{name}") {
		return fmt.Errorf("%q sends folder and file names, which often hold the patient's name or ID; "+
			"a de-identified image's title (and image_name) may use only {hash} and fixed text", tmpl)
	}
	return nil
}

// maxTitle is the server's limit on an item title.
const maxTitle = 255

// renderTitle fills in an item title template: {path} is the image's path
// relative to the watch (its key, or for keys that are not paths the folder
// holding its files), {name} the last element of that path, {hash} 12 hex
// digits of a hash over the files' relative paths and contents, or for a
// DICOM group over its key, keyed with secret when the group is
// de-identified (seriesTitleHash). With deid (the image's DICOM is
// de-identified) the default is DeidTitle and a template that names paths
// is refused (DeidTitleProblem): the image fails rather than send them.
func renderTitle(tmpl, key string, files []state.File, secret []byte, deid bool) (string, error) {
	switch {
	case tmpl == "" && deid:
		tmpl = DeidTitle
	case tmpl == "":
		tmpl = DefaultTitle
	case deid:
		if err := DeidTitleProblem(tmpl); err != nil {
			return "", inputErrorf("%s: title %v; set the watch's title to \"{hash}\" (or fixed text with {hash})", key, err)
		}
	}
	p := titlePath(key, files)
	hash := titleHash(files)
	if group.IsDICOMKey(key) {
		// A DICOM series is one item whatever arrives late: its title is
		// keyed by the series, not the content (deid.go, seriesTitleHash).
		hash = seriesTitleHash(key, secret)
	}
	render := func(p string) string {
		return strings.NewReplacer("{path}", p, "{name}", path.Base(p), "{hash}", hash).Replace(tmpl)
	}
	t := render(p)
	if over := len(t) - maxTitle; over > 0 && over+1 < len(p) {
		// Too long for the server: drop the start of the path, keep its
		// end and the hash, which is what tells items apart.
		cut := over + len("…")
		for cut < len(p) && !utf8.RuneStart(p[cut]) {
			cut++
		}
		t = render("…" + p[cut:])
	}
	t = normalizeTitle(t)
	for len(t) > maxTitle || !utf8.ValidString(t) {
		t = normalizeTitle(t[:len(t)-1])
	}
	return t, nil
}

// normalizeTitle makes a title what the server stores, so that it is found
// again by its title: control characters and bidirectional controls (which
// could make a title read as another) removed, and surrounding white space
// trimmed, as Django REST framework's CharField does (trim_whitespace,
// Python's str.strip).
func normalizeTitle(t string) string {
	t = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || isBidiControl(r) {
			return -1
		}
		return r
	}, t)
	return strings.TrimSpace(t)
}

// isBidiControl reports the Unicode bidirectional formatting characters.
func isBidiControl(r rune) bool {
	switch {
	case r == '\u061c', r == '\u200e', r == '\u200f':
		return true
	case r >= '\u202a' && r <= '\u202e', r >= '\u2066' && r <= '\u2069':
		return true
	}
	return false
}

func titlePath(key string, files []state.File) string {
	if !strings.Contains(key, ":") || len(files) == 0 {
		return key
	}
	// A synthetic key (dicom:<uids>): the folder that holds the files.
	dir := path.Dir(files[0].Rel)
	for _, f := range files[1:] {
		for dir != "." && !strings.HasPrefix(f.Rel, dir+"/") {
			dir = path.Dir(dir)
		}
	}
	if dir == "." {
		return path.Base(files[0].Rel)
	}
	return dir
}

// titleHash is 12 hex digits of a SHA-256 over the sorted relative paths
// and content hashes of the files.
func titleHash(files []state.File) string {
	lines := make([]string, len(files))
	for i, f := range files {
		lines[i] = f.Rel + "\x00" + f.SHA256 + "\n"
	}
	sort.Strings(lines)
	h := sha256.New()
	for _, l := range lines {
		io.WriteString(h, l)
	}
	return hex.EncodeToString(h.Sum(nil))[:12]
}
