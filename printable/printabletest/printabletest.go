// Package printabletest gives tests of gcingest's outputs hostile file
// names and a check that what they print holds nothing a terminal would
// act on. It is written from the rules, independently of package
// printable, so that a test does not share a bug of what it tests.
package printabletest

import (
	"fmt"
	"os"
	"path/filepath"
	"unicode/utf8"
)

// Names are file names anyone who can write to a drop folder can make
// (Linux allows every byte but '/' and NUL): each carries a control or
// bidi character, or a byte that is not UTF-8, that would act on a
// terminal or change how a line reads if it reached one raw.
var Names = []string{
	"clear\x1b[2J\x1b[H.mha", // ESC: clears the screen
	"bell\a.mha",             // BEL
	"cr\rforged.mha",         // CR: overwrites the start of the line
	"lf\nFAIL  forged.mha",   // LF: forges a line
	"rlo\u202egpj.mha",       // RIGHT-TO-LEFT OVERRIDE: reads as "rloahm.jpg"
	"csi\u009b2J.mha",        // C1 CSI, as UTF-8
	"bad\xff\x9b.mha",        // not UTF-8; 0x9b alone is CSI on 8-bit terminals
}

// Escaped are Names as gcingest shows them, in the same order.
var Escaped = []string{
	`clear\x1b[2J\x1b[H.mha`,
	`bell\a.mha`,
	`cr\rforged.mha`,
	`lf\nFAIL  forged.mha`,
	`rlo\u202egpj.mha`,
	`csi\u009b2J.mha`,
	`bad\xff\x9b.mha`,
}

// TryNames creates and removes a file of each of Names in dir, and returns
// the error of the first one the file system refuses: Windows refuses
// control characters in names, macOS names that are not UTF-8. A test
// that needs such files on disk skips on it.
func TryNames(dir string) error {
	for _, n := range Names {
		p := filepath.Join(dir, n)
		f, err := os.Create(p)
		if err != nil {
			return err
		}
		f.Close()
		if err := os.Remove(p); err != nil {
			return err
		}
	}
	return nil
}

// Raw describes the first character of out that a terminal would act on,
// or that reorders text, with its byte offset; "" when there is none. A
// line feed is allowed: outputs are made of lines.
func Raw(out string) string {
	for i := 0; i < len(out); {
		r, n := utf8.DecodeRuneInString(out[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			return fmt.Sprintf("byte %#x (not UTF-8) at %d", out[i], i)
		case r == '\n':
		case r < 0x20, r >= 0x7f && r < 0xa0, isBidi(r):
			return fmt.Sprintf("%U at %d", r, i)
		}
		i += n
	}
	return ""
}

func isBidi(r rune) bool {
	switch r {
	case 0x061c, 0x200e, 0x200f, 0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x2028, 0x2029:
		return true
	}
	return false
}
