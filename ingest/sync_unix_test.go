//go:build unix

package ingest

import "syscall"

// syncDisk writes what the page cache holds to disk.
func syncDisk() { syscall.Sync() }
