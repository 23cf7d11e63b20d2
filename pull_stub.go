package main

import (
	"context"
	"errors"
	"io"
	"log/slog"

	"github.com/gcingest/gcingest/config"
)

// STUB: the pull engine replaces runPull.

// runPull downloads the images of opts.Archive into opts.Out, resumably.
func runPull(ctx context.Context, cfg *config.Config, opts pullOptions, stdout io.Writer, log *slog.Logger) error {
	return errors.New("pull is not implemented yet")
}
