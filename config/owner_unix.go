//go:build unix

package config

import (
	"os"
	"syscall"
)

// exposed reports whether group or others may change fi, or read it
// while root does not own it (root:gcingest 0640 is the packaged layout).
func exposed(fi os.FileInfo) bool {
	m := fi.Mode().Perm()
	return m&0o027 != 0 || (m&0o040 != 0 && !ownedByRoot(fi))
}

// ownedByRoot reports whether root owns the file: then the service user,
// reading it through its group, cannot change it (its url, say, to send
// the token elsewhere).
func ownedByRoot(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Uid == 0
}
