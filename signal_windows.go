//go:build windows

package main

import (
	"os"
	"os/signal"
)

func notifyStop(c chan<- os.Signal) { signal.Notify(c, os.Interrupt) }
func stopNotify(c chan<- os.Signal) { signal.Stop(c) }
