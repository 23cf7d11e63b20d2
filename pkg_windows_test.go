//go:build windows

package main

import "os"

func fileUID(fi os.FileInfo) string { return "" }

func fileGID(fi os.FileInfo) string { return "" }
