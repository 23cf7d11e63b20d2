//go:build unix

package progress

import (
	"os"

	"golang.org/x/sys/unix"
)

// TerminalWidth returns a function that reports f's columns now (0 when
// f is not a terminal), for Display.FitTo.
func TerminalWidth(f *os.File) func() int {
	return func() int {
		ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ)
		if err != nil {
			return 0
		}
		return int(ws.Col)
	}
}
