//go:build windows

package progress

import (
	"os"

	"golang.org/x/sys/windows"
)

// TerminalWidth returns a function that reports f's columns now (0 when
// f is not a console), for Display.FitTo.
func TerminalWidth(f *os.File) func() int {
	return func() int {
		var info windows.ConsoleScreenBufferInfo
		if err := windows.GetConsoleScreenBufferInfo(windows.Handle(f.Fd()), &info); err != nil {
			return 0
		}
		return int(info.Window.Right - info.Window.Left + 1)
	}
}
