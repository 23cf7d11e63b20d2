//go:build windows

package main

import (
	"context"
	"log/slog"

	"github.com/gcingest/gcingest/config"
)

// reloadOnSIGHUP: Windows has no SIGHUP; restart the service to reload.
func reloadOnSIGHUP(ctx context.Context, path string, log *slog.Logger, reload chan *config.Config) {
	<-ctx.Done()
}
