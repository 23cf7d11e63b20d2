//go:build unix

package config

import (
	"os"
	"syscall"
)

// ownedByRoot reports whether root owns the file: then the service user,
// reading it through its group, cannot change it (its url, say, to send
// the token elsewhere).
func ownedByRoot(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0
}
