package ingest

import (
	"fmt"
	"os"
	"syscall"
)

// fileIdent is the file's device, inode and change time ("dev:ino:ctime"),
// which no write, rename or time change leaves as they were.
func fileIdent(fi os.FileInfo) string {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ""
	}
	return fmt.Sprintf("%d:%d:%d.%09d", st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
}
