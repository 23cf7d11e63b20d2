package pull

import (
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// maxNameBytes caps a sanitised name. File systems allow 255 bytes per
// name; the cap leaves room for the " [pk]" a colliding item folder gets and
// for the ".part" suffix of a download in progress.
const maxNameBytes = 120

// maxExtBytes caps one dot-suffix taken from a server file name.
const maxExtBytes = 16

// Sanitize turns a name that came from the server (an item title, a socket
// slug, a stored file name) into one safe path component: no separators, no
// "..", no leading dot, no control or bidi-formatting characters, none of the
// characters Windows refuses, no Windows device name, valid UTF-8, at most
// maxNameBytes bytes. It returns "" when nothing usable is left, so the
// caller can fall back to another name.
func Sanitize(s string) string {
	var b strings.Builder
	for i, r := range s {
		if r == utf8.RuneError {
			// Invalid UTF-8 (or a literal U+FFFD): keep the name printable.
			if _, size := utf8.DecodeRuneInString(s[i:]); size <= 1 {
				b.WriteByte('_')
				continue
			}
		}
		switch {
		case r == '/' || r == '\\':
			b.WriteByte('_')
		case strings.ContainsRune(`<>:"|?*`, r):
			// Refused by Windows; an archive pulled on Linux may be copied there.
			b.WriteByte('_')
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || r == '\u2028' || r == '\u2029':
			// Control characters and invisible formatting (e.g. U+202E
			// right-to-left override) would make the name lie on screen.
			b.WriteByte('_')
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	// ".." anywhere is replaced, not only as a whole name, so that no
	// component ever reads as a parent reference to a careless reader.
	for strings.Contains(out, "..") {
		out = strings.ReplaceAll(out, "..", "_")
	}
	// Windows drops trailing dots and spaces; leading spaces confuse shells.
	out = strings.TrimRight(out, ". ")
	out = strings.TrimLeft(out, " ")
	// A leading dot would hide the name and could collide with our own
	// bookkeeping files, which all start with a dot.
	if strings.HasPrefix(out, ".") {
		out = "_" + out[1:]
	}
	out = truncate(out, maxNameBytes)
	out = strings.TrimRight(out, ". ")
	if out != s && strings.Trim(out, "_") == "" {
		// Nothing but replaced characters ("..", "../.."): no name at all.
		return ""
	}
	if isWindowsDevice(out) {
		out = "_" + out
	}
	return out
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// isWindowsDevice reports whether name (with any extension) is a reserved
// device name on Windows, such as "CON" or "com1.txt".
func isWindowsDevice(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL":
		return true
	}
	if len(base) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) {
		c := base[3]
		return c >= '1' && c <= '9'
	}
	return false
}

// fold is the key under which two names collide: case-insensitive file
// systems (macOS, Windows) treat "Case1" and "case1" as one name.
func fold(s string) string { return strings.ToLower(s) }

// itemRef is what naming needs to know about an archive item.
type itemRef struct {
	PK    string
	Title string
}

// itemFolders gives every item a distinct, sanitised folder name: its title,
// or its pk when the title is empty or sanitises to nothing. Items whose
// names collide (after sanitising, truncating and case folding) all get
// " [pk]" appended, so the outcome depends only on the set of items and not
// on the order the server listed them in.
func itemFolders(items []itemRef) map[string]string {
	sorted := append([]itemRef(nil), items...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].PK < sorted[j].PK })

	base := make(map[string]string, len(sorted))
	count := make(map[string]int, len(sorted))
	for _, it := range sorted {
		b := Sanitize(it.Title)
		if b == "" {
			b = pkName(it.PK)
		}
		base[it.PK] = b
		count[fold(b)]++
	}

	out := make(map[string]string, len(sorted))
	used := make(map[string]bool, len(sorted))
	// Unique names first, so a suffixed name can never take one of them.
	for _, it := range sorted {
		if b := base[it.PK]; count[fold(b)] == 1 {
			out[it.PK] = b
			used[fold(b)] = true
		}
	}
	for _, it := range sorted {
		if _, ok := out[it.PK]; ok {
			continue
		}
		pk := pkName(it.PK)
		suffix := " [" + pk + "]"
		name := truncate(base[it.PK], maxNameBytes-len(suffix)) + suffix
		if used[fold(name)] {
			name = pk
		}
		for n := 2; used[fold(name)]; n++ {
			name = pk + "-" + strconv.Itoa(n)
		}
		out[it.PK] = name
		used[fold(name)] = true
	}
	return out
}

// pkName is the sanitised pk, or "item" when even that is unusable.
func pkName(pk string) string {
	if s := Sanitize(pk); s != "" {
		return s
	}
	return "item"
}

// fileExt returns the dot-suffix of the stored file name at the end of a
// download URL, lower-cased and limited to letters and digits: ".mha",
// ".tif", ".pdf". A compression suffix keeps the one before it
// (".nii.gz"). It returns "" when there is none.
func fileExt(rawURL string) string {
	base := urlBase(rawURL)
	var exts []string
	for range 2 {
		i := strings.LastIndexByte(base, '.')
		if i <= 0 {
			break
		}
		e := strings.ToLower(base[i+1:])
		if e == "" || len(e) > maxExtBytes || !isAlnum(e) {
			break
		}
		exts = append([]string{e}, exts...)
		base = base[:i]
		if !isCompression(e) {
			break
		}
	}
	if len(exts) == 0 {
		return ""
	}
	return "." + strings.Join(exts, ".")
}

// urlBase is the unescaped last path element of a URL, "" if there is none.
func urlBase(rawURL string) string {
	p := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		p = u.Path
	}
	b := path.Base(p)
	if b == "/" || b == "." {
		return ""
	}
	return b
}

// urlIdentity is the part of a download URL that names the stored file:
// its path. Scheme, host and query (signatures) may change between runs
// without the file changing.
func urlIdentity(rawURL string) string {
	if u, err := url.Parse(rawURL); err == nil {
		return u.EscapedPath()
	}
	return rawURL
}

func isCompression(e string) bool {
	switch e {
	case "gz", "bz2", "xz", "zst":
		return true
	}
	return false
}

func isAlnum(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9') {
			return false
		}
	}
	return true
}

// redactURL drops the query of a URL for error messages: signed URLs carry
// their signature there.
func redactURL(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable URL)"
	}
	u.RawQuery = ""
	u.Fragment = ""
	u.User = nil
	return u.String()
}
