//go:build !windows

package main

import (
	"os"
	"os/signal"
	"syscall"
)

func notifyStop(c chan<- os.Signal) { signal.Notify(c, syscall.SIGTERM, os.Interrupt) }
func stopNotify(c chan<- os.Signal) { signal.Stop(c) }
