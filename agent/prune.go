package agent

import (
	"context"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/gcingest/gcingest/state"
)

// pruneEvery is how often the agent prunes old records.
const pruneEvery = time.Hour

// pruneLoop prunes old records of finished images at start and every
// interval until ctx is done, so the state file, status and /metrics do not
// grow for ever.
func pruneLoop(ctx context.Context, st *state.Store, keep, interval time.Duration, log *slog.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		n, err := pruneFinished(st, keep, time.Now())
		switch {
		case err != nil:
			log.Warn("pruning old records failed; trying again later", "err", err)
		case n > 0:
			log.Info("pruned records of images finished long ago", "images", n, "keep", keep)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pruneFinished deletes the records of images that finished (or were found
// already in the archive) more than keep before now, unless one of their
// files is still where it was found: with after_upload = "keep" the record
// is what keeps the file from being sent again.
func pruneFinished(st *state.Store, keep time.Duration, now time.Time) (int, error) {
	imgs, err := st.List(state.Finished, state.Duplicate)
	if err != nil {
		return 0, err
	}
	var ids []uint64
	for _, img := range imgs {
		end := img.Finished
		if end.IsZero() {
			end = img.Updated
		}
		if !img.ActionDone || now.Sub(end) < keep || anyFileThere(img.Files) {
			continue
		}
		ids = append(ids, img.ID)
	}
	if len(ids) == 0 {
		return 0, nil
	}
	return st.Delete(ids...)
}

// anyFileThere reports whether a file is still at its path; an error other
// than "does not exist" counts as there, to be safe.
func anyFileThere(files []state.File) bool {
	for _, f := range files {
		if _, err := os.Lstat(f.Path); !errors.Is(err, fs.ErrNotExist) {
			return true
		}
	}
	return false
}
