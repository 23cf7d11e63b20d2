package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/gcingest/gcingest/config"
	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/ingest"
)

// checkWatchFolders refuses a drop folder missing at start: a mistake in the
// config. One that goes away later (an unmounted share) is waited for by its
// watcher.
func checkWatchFolders(cfg *config.Config) error {
	for i, w := range cfg.Watch {
		fi, err := os.Stat(w.Path)
		if err == nil && !fi.IsDir() {
			err = errors.New("it is a file")
		}
		if err != nil {
			return &ConfigError{fmt.Errorf("watch[%d].path: %s is not a folder this user can see (%w): create it, mount the share, or fix the path", i, w.Path, err)}
		}
	}
	return CheckResolvedFolders(cfg)
}

// verifyTimeout bounds the start-up check of the server.
const verifyTimeout = 90 * time.Second

// verifyServer checks, before any work starts, that the token works and each
// watch's archive and interface exist. A permanent answer (401, 404) stops the
// agent with a message naming the key. A network failure does not: a service
// started at boot may come up before the network, and the pipeline retries on
// its own.
func verifyServer(ctx context.Context, c *gcapi.Client, cfg *config.Config, log *slog.Logger) error {
	// A server that answers a byte at a time must not hold the start for
	// the client's whole retry budget (minutes per call): past this, the
	// agent starts and the pipeline waits for the server as on any outage.
	vctx, cancel := context.WithTimeout(ctx, verifyTimeout)
	defer cancel()
	for i, w := range cfg.Watch {
		if _, err := c.ArchiveBySlug(vctx, w.Archive); err != nil {
			switch {
			case ctx.Err() != nil:
				return nil
			case gcapi.IsNotFound(err):
				return &ConfigError{fmt.Errorf("watch[%d].archive: no archive %q is visible to this token: check the slug and that the account is an editor or uploader of the archive: %w", i, w.Archive, err)}
			case errors.Is(err, gcapi.ErrUnauthorized):
				return fmt.Errorf("watch[%d].archive %q: %w", i, w.Archive, err)
			}
			// Unreachable, or an answer that makes no sense (a proxy's
			// page, a body too large): what the pipeline meets later it
			// retries, so the start does not end on it either; the
			// agent stays up, whatever supervises it.
			log.Warn("could not check the archive with the server; starting anyway, uploads wait until the server answers", "archive", w.Archive, "err", err)
			return nil
		}
		iface, err := c.InterfaceBySlug(vctx, w.Interface)
		if err != nil {
			switch {
			case gcapi.IsNotFound(err):
				return &ConfigError{fmt.Errorf("watch[%d].interface: the server has no interface (socket) %q: check the slug: %w", i, w.Interface, err)}
			case errors.Is(err, gcapi.ErrUnauthorized):
				return fmt.Errorf("watch[%d].interface %q: %w", i, w.Interface, err)
			}
			log.Warn("could not check the interface with the server; starting anyway", "interface", w.Interface, "err", err)
			return nil
		}
		if iface.SuperKind != gcapi.SuperKindImage {
			return &ConfigError{fmt.Errorf("watch[%d].interface: %q is a %s socket (kind %q), but the watch's main image needs an image socket", i, w.Interface, iface.SuperKind, iface.Kind)}
		}
		if iface.Kind == ingest.KindDICOMImageSet {
			if err := ingest.DeidTitleProblem(w.Title); err != nil {
				return &ConfigError{fmt.Errorf("watch[%d].title: %w (the interface %q is a DICOM Image Set, always de-identified); use \"{hash}\" and fixed text, or leave title unset", i, err, w.Interface)}
			}
		}
		for pattern, slug := range w.Values {
			if _, err := c.InterfaceBySlug(vctx, slug); gcapi.IsNotFound(err) {
				return &ConfigError{fmt.Errorf("watch[%d].values %q: the server has no interface (socket) %q: check the slug: %w", i, pattern, slug, err)}
			}
		}
	}
	return nil
}
