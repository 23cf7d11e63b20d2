package printable

import (
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gcingest/gcingest/printable/printabletest"
)

func TestString(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"plain", "case1/ct-0001.mha", "case1/ct-0001.mha"},
		{"empty", "", ""},
		{"unicode letters stay", "Müller/脳スキャン/ü.nii.gz", "Müller/脳スキャン/ü.nii.gz"},
		{"backslash stays", `C:\drop\ct.mha`, `C:\drop\ct.mha`},
		{"clear screen", "\x1b[2J.mha", `\x1b[2J.mha`},
		{"window title", "\x1b]0;pwned\a.mha", `\x1b]0;pwned\a.mha`},
		{"line breaks", "a\r\nb\tc", `a\r\nb\tc`},
		{"other C0 and DEL", "\x00\x01\b\v\f\x7f", `\x00\x01\b\v\f\x7f`},
		{"C1 CSI", "a\u009b2Jb", `a\u009b2Jb`},
		{"C1 NEL", "a\u0085b", `a\u0085b`},
		{"right-to-left override", "scan\u202egpj.mha", `scan\u202egpj.mha`},
		{"every bidi control", "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069",
			`\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069`},
		{"line and paragraph separators", "a\u2028b\u2029c", `a\u2028b\u2029c`},
		{"invalid UTF-8", "scan-\xff.mha", `scan-\xff.mha`},
		{"a lone C1 byte is invalid UTF-8", "a\x9b2J", `a\x9b2J`},
		{"cut rune", "ab\xe2\x80", `ab\xe2\x80`},
		{"a valid U+FFFD stays", "a\uFFFDb", "a\uFFFDb"},
		{"neighbours of the bidi ranges stay", "\u00a0\u200d\u2027\u202f\u2065\u206a", "\u00a0\u200d\u2027\u202f\u2065\u206a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := String(tt.in); got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

// The names every output's test feeds come out as those tests expect.
func TestHostileNames(t *testing.T) {
	for i, n := range printabletest.Names {
		got := String(n)
		if got != printabletest.Escaped[i] {
			t.Errorf("String(%q) = %q, want %q", n, got, printabletest.Escaped[i])
		}
		if raw := printabletest.Raw(got); raw != "" {
			t.Errorf("String(%q) = %q holds %s", n, got, raw)
		}
		if printabletest.Raw(n) == "" && !strings.Contains(n, "\n") { // Raw allows line feeds
			t.Errorf("printabletest.Raw(%q) finds nothing", n)
		}
	}
}

// unsafeIn reports the first byte or rune of s that a terminal could act on,
// or "" when there is none. Tests of every output use the same rule.
func unsafeIn(s string) string {
	if i := firstUnsafe(s); i >= 0 {
		r, _ := utf8.DecodeRuneInString(s[i:])
		return fmt.Sprintf("%q at %d", r, i)
	}
	return ""
}

func FuzzString(f *testing.F) {
	for _, s := range []string{"", "plain.mha", "\x1b[2J", "\u202e", "\xff\xfe", "a\u009bb", `\x1b`, "ü\r\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if u := unsafeIn(got); u != "" {
			t.Fatalf("String(%q) = %q holds %s", s, got, u)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q is not valid UTF-8", s, got)
		}
		if again := String(got); again != got {
			t.Fatalf("String twice = %q, once %q", again, got)
		}
		if firstUnsafe(s) < 0 && got != s {
			t.Fatalf("String(%q) = %q; nothing needed escaping", s, got)
		}
	})
}

func TestStringDoesNotAllocateWhenNothingIsEscaped(t *testing.T) {
	for _, s := range []string{"scans/2026-03-04/ct-0001.mha", "Müller/ü.nii.gz"} {
		if n := testing.AllocsPerRun(100, func() { _ = String(s) }); n != 0 {
			t.Errorf("String(%q): %v allocations, want 0", s, n)
		}
	}
}

func TestError(t *testing.T) {
	if Error(nil) != nil {
		t.Error("Error(nil) is not nil")
	}
	t.Run("one error", func(t *testing.T) {
		base := &fs.PathError{Op: "open", Path: "/drop/\x1b[2J.mha", Err: fs.ErrPermission}
		err := Error(fmt.Errorf("retry image 3: %w", base))
		if got, want := err.Error(), `retry image 3: open /drop/\x1b[2J.mha: permission denied`; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
		var pe *fs.PathError
		if !errors.Is(err, fs.ErrPermission) || !errors.As(err, &pe) {
			t.Error("errors.Is and errors.As do not see the wrapped error")
		}
	})
	t.Run("joined errors keep their lines", func(t *testing.T) {
		err := Error(errors.Join(errors.New("retry image 1: move a\nb.mha back"), errors.New("retry image 2: it is done")))
		if got, want := err.Error(), "retry image 1: move a\\nb.mha back\nretry image 2: it is done"; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
	t.Run("two causes are not a join", func(t *testing.T) {
		err := Error(fmt.Errorf("copy %w to %w", errors.New("a\n"), errors.New("b")))
		if got, want := err.Error(), `copy a\n to b`; got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	})
}

func BenchmarkString(b *testing.B) {
	for _, s := range []string{"scans/2026-03-04/ct-0001.mha", "scans/\x1b[2J\u202ect-0001\xff.mha"} {
		b.Run(fmt.Sprintf("%d unsafe", strings.Count(String(s), `\`)), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_ = String(s)
			}
		})
	}
}
