//go:build unix

package main

import (
	"os/exec"
	"syscall"
)

// runAs makes cmd run as the user uid, group gid (the test runs as root).
func runAs(cmd *exec.Cmd, uid, gid uint32) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
}
