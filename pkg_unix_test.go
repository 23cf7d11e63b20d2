//go:build !windows

package main

import (
	"os"
	"strconv"
	"syscall"
)

func fileUID(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.Itoa(int(st.Uid))
	}
	return ""
}

func fileGID(fi os.FileInfo) string {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return strconv.Itoa(int(st.Gid))
	}
	return ""
}
