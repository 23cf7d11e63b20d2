// Package printable makes untrusted text safe to show: file names from drop
// folders, which anyone who can write there chooses, and messages that
// quote them. A control character in a name written raw to a terminal can
// retitle the window, clear the screen or forge lines; a bidi control can
// make a name read as another. Every human output of gcingest (status,
// plan, check, retry, the live display, the .error.txt notes) passes such
// text through String at the point where it is written.
//
// The escapes are those Go uses in quoted strings, so "\x1b[2J.mha"
// shows as `\x1b[2J.mha`: the reader still tells which file it is.
// A backslash is not escaped, so escaping twice changes nothing (names
// the status endpoint already escaped pass through unharmed) and Windows
// paths keep their separators; the price is that a name holding a
// literal `\x1b` looks like one holding ESC. `gcingest status --json`
// gives the exact valid UTF-8 name when that matters.
package printable

import (
	"strings"
	"unicode/utf8"
)

// String returns s with each character that acts on a terminal or on the
// order of displayed text replaced by a visible escape:
//
//   - C0 controls, DEL and C1 controls: \a \b \t \n \v \f \r for those
//     that have one, else \x1b (below 0x80) or \u009b;
//   - bidi controls U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069,
//     and the line and paragraph separators U+2028, U+2029: \u202e;
//   - each byte that is not part of valid UTF-8: \xff.
//
// Everything else, backslashes included, is kept as it is. When nothing
// needs escaping s itself is returned, without allocating.
func String(s string) string {
	i := firstUnsafe(s)
	if i < 0 {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		c := s[i]
		if c < utf8.RuneSelf {
			if safeASCII(c) {
				b.WriteByte(c)
			} else {
				writeEscape(&b, rune(c))
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			b.WriteString(`\x`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		case unsafeRune(r):
			writeEscape(&b, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

// firstUnsafe returns the index of the first byte String must escape, or
// -1. Printable ASCII, the common case, is checked a byte at a time
// without decoding.
func firstUnsafe(s string) int {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if !safeASCII(c) {
				return i
			}
			i++
			continue
		}
		r, n := utf8.DecodeRuneInString(s[i:])
		if (r == utf8.RuneError && n == 1) || unsafeRune(r) {
			return i
		}
		i += n
	}
	return -1
}

func safeASCII(c byte) bool { return c >= 0x20 && c < 0x7f }

// unsafeRune reports whether r, at or above 0x80, is a C1 control, a bidi
// control or a line or paragraph separator.
func unsafeRune(r rune) bool {
	switch {
	case r < 0xa0:
		return true // C1: U+0080–U+009F (U+009B is CSI on some terminals)
	case r < 0x061c:
		return false
	case r == 0x061c, r == 0x200e, r == 0x200f,
		r >= 0x2028 && r <= 0x202e, // separators, then LRE RLE PDF LRO RLO
		r >= 0x2066 && r <= 0x2069: // LRI RLI FSI PDI
		return true
	}
	return false
}

const hex = "0123456789abcdef"

func writeEscape(b *strings.Builder, r rune) {
	switch r {
	case '\a':
		b.WriteString(`\a`)
	case '\b':
		b.WriteString(`\b`)
	case '\t':
		b.WriteString(`\t`)
	case '\n':
		b.WriteString(`\n`)
	case '\v':
		b.WriteString(`\v`)
	case '\f':
		b.WriteString(`\f`)
	case '\r':
		b.WriteString(`\r`)
	default:
		if r < utf8.RuneSelf {
			b.WriteString(`\x`)
			b.WriteByte(hex[r>>4])
			b.WriteByte(hex[r&0xf])
			return
		}
		b.WriteString(`\u`)
		for shift := 12; shift >= 0; shift -= 4 {
			b.WriteByte(hex[r>>shift&0xf])
		}
	}
}

// Error returns err with a message made printable by String, for errors
// that quote file names and are printed to a terminal. errors.Is and
// errors.As see err through it. The parts of an errors.Join are escaped
// one by one, so the line breaks that separate them stay. Error(nil) is
// nil.
func Error(err error) error {
	if err == nil {
		return nil
	}
	return &printableError{err}
}

type printableError struct{ err error }

func (e *printableError) Error() string {
	msg := e.err.Error()
	if j, ok := e.err.(interface{ Unwrap() []error }); ok {
		parts := j.Unwrap()
		raw := make([]string, len(parts))
		esc := make([]string, len(parts))
		whole := len(parts) > 0
		for i, p := range parts {
			if p == nil {
				whole = false
				break
			}
			raw[i], esc[i] = p.Error(), Error(p).Error()
		}
		// Only errors.Join's message is its parts, one per line; another
		// error with several causes (fmt.Errorf with two %w) says more.
		if whole && strings.Join(raw, "\n") == msg {
			return strings.Join(esc, "\n")
		}
	}
	return String(msg)
}

func (e *printableError) Unwrap() error { return e.err }
