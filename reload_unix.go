//go:build !windows

package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/gcingest/gcingest/config"
)

// reloadOnSIGHUP re-reads the config at path on every SIGHUP and offers the
// new one on reload, until ctx is done.
func reloadOnSIGHUP(ctx context.Context, path string, log *slog.Logger, reload chan *config.Config) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if nc := loadReload(path, log); nc != nil {
				offer(reload, nc)
			}
		}
	}
}
