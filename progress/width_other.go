//go:build !unix && !windows

package progress

import "os"

// TerminalWidth reports 0 (unknown: 80 columns) where the platform has no
// way to ask.
func TerminalWidth(f *os.File) func() int { return func() int { return 0 } }
