package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/durable"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
)

// stepAfter performs the after-upload action of a done (or duplicate)
// image once, and records it.
func (p *Pipeline) stepAfter(ctx context.Context, img *state.Image) error {
	w, err := p.watchOf(img)
	if err != nil {
		return err
	}
	movedTo, err := afterAction(img, w)
	if err != nil {
		return err
	}
	p.removeSpools(img)
	return p.save(img, func(r *state.Image) {
		r.ActionDone, r.MovedTo = true, movedTo
		if r.State == state.Done {
			r.State, r.Finished = state.Finished, p.cfg.Now().UTC()
		}
	})
}

// afterAction keeps, moves or deletes the image's files as the watch says.
// Doing it twice is harmless. It returns where the files went, if moved.
func afterAction(img *state.Image, w Watch) (string, error) {
	if w.AfterUpload == "move" || w.AfterUpload == "delete" {
		img = uploadedOnly(img)
	}
	switch w.AfterUpload {
	case "", "keep":
		return "", nil
	case "move":
		if w.DoneDir == "" {
			return "", inputErrorf("after_upload = move but watch %s has no done_dir", w.Path)
		}
		return moveFiles(img, w.DoneDir)
	case "delete":
		for _, f := range img.Files {
			if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", fmt.Errorf("delete uploaded %s: %w", f.Path, err)
			}
			removeEmptyParents(filepath.Dir(f.Path), img.Watch)
		}
		return "", nil
	}
	return "", inputErrorf("unknown after_upload %q for watch %s", w.AfterUpload, w.Path)
}

// uploadedOnly returns img with only the files that still hold what was
// uploaded (size and modification time as hashed) or are already gone. A
// file written again under the same name since (a scanner exporting again)
// holds content the archive does not have: it stays in the drop folder,
// where the watcher finds it as a new image.
func uploadedOnly(img *state.Image) *state.Image {
	out := *img
	out.Files = nil
	for _, f := range img.Files {
		fi, err := os.Stat(f.Path)
		if err == nil && f.SHA256 != "" && (fi.Size() != f.Size || !fi.ModTime().Equal(f.ModTime)) {
			continue
		}
		out.Files = append(out.Files, f)
	}
	return &out
}

// stepFailedFiles aborts the failed image's open uploads and moves its
// files to failed_dir with the reason beside them (or leaves them in place
// when there is no failed_dir), once.
func (p *Pipeline) stepFailedFiles(ctx context.Context, img *state.Image) error {
	if err := p.abortOpen(ctx, img); err != nil {
		// Keep the image failed; try the abort again later.
		if ctx.Err() != nil {
			return err
		}
		next := p.cfg.Now().Add(p.backoff(img.Attempts + 1))
		p.log.Warn("could not abort the uploads of a failed image; trying again later", "id", img.ID, "err", err)
		_ = p.save(img, func(r *state.Image) { r.Attempts++ })
		return &waitError{at: next}
	}
	p.removeSpools(img)
	w, _ := p.watchOf(img)
	movedTo := ""
	if w.FailedDir != "" {
		var err error
		movedTo, err = moveFiles(img, w.FailedDir)
		if err != nil {
			p.log.Error("could not move the files of a failed image; left in place", "id", img.ID, "err", err)
			movedTo = ""
		} else {
			for _, n := range failureNotes(img) {
				note := filepath.Join(movedTo, filepath.FromSlash(n.Rel))
				if err := durable.WriteFile(note, []byte(n.Text), 0o644); err != nil {
					p.log.Error("could not write the error note", "file", note, "err", err)
				}
			}
		}
	}
	return p.save(img, func(r *state.Image) { r.ActionDone, r.MovedTo = true, movedTo })
}

// restoreFailed moves a failed image's files back from failed_dir to where
// they were found, for gcingest retry.
func restoreFailed(img *state.Image) error {
	for _, f := range img.Files {
		from := filepath.Join(img.MovedTo, filepath.FromSlash(f.Rel))
		if _, err := os.Stat(f.Path); err == nil {
			continue // already back
		}
		if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
			return fmt.Errorf("make folder for %s: %w", f.Path, err)
		}
		if err := moveFile(from, f.Path); err != nil {
			return err
		}
	}
	for _, n := range failureNotes(img) {
		os.Remove(filepath.Join(img.MovedTo, filepath.FromSlash(n.Rel)))
	}
	return nil
}

// failureNotes are the notes explaining img's failure (package group knows
// where they go for its kind of group).
func failureNotes(img *state.Image) []group.Note {
	rels := make([]string, len(img.Files))
	for i, f := range img.Files {
		rels[i] = f.Rel
	}
	return group.FailureNotes(Kind(img.Kind), img.Key, rels, img.ID, time.Now(), img.LastError)
}

// moveFiles moves the image's files to dir/<rel>, making folders. A file
// already moved (absent at its source, present at the target) counts as
// moved, so a repeated call after a crash finishes the job. When a target
// name is taken by another file, the image goes to dir/<id>/<rel> instead:
// nothing is overwritten. It returns the folder the files went to.
func moveFiles(img *state.Image, dir string) (string, error) {
	base := dir
	for _, f := range img.Files {
		to := filepath.Join(base, filepath.FromSlash(f.Rel))
		if _, err := os.Stat(to); err == nil {
			if _, serr := os.Stat(f.Path); serr == nil {
				base = filepath.Join(dir, fmt.Sprintf("%06d", img.ID))
				break
			}
		}
	}
	for _, f := range img.Files {
		to := filepath.Join(base, filepath.FromSlash(f.Rel))
		if _, err := os.Stat(f.Path); errors.Is(err, os.ErrNotExist) {
			continue // moved by an earlier attempt, or deleted by someone
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return "", fmt.Errorf("make folder for %s: %w", to, err)
		}
		if err := moveFile(f.Path, to); err != nil {
			return "", err
		}
		removeEmptyParents(filepath.Dir(f.Path), img.Watch)
	}
	return base, nil
}

// moveFile renames from to to; across file systems it copies to a temporary
// name beside the target, syncs, renames into place and removes the source.
func moveFile(from, to string) error {
	err := os.Rename(from, to)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		if err != nil {
			return fmt.Errorf("move %s to %s: %w", from, to, err)
		}
		return nil
	}
	in, err := os.Open(from)
	if err != nil {
		return fmt.Errorf("move %s: %w", from, err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("move %s: %w", from, err)
	}
	err = durable.Write(to, 0o644, func(out *os.File) error {
		if _, err := io.Copy(out, in); err != nil {
			return fmt.Errorf("copy %s to %s: %w", from, to, err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("move %s to %s: %w", from, to, err)
	}
	os.Chtimes(to, fi.ModTime(), fi.ModTime())
	if err := os.Remove(from); err != nil {
		return fmt.Errorf("remove %s after copying it to %s: %w", from, to, err)
	}
	return nil
}

// removeEmptyParents removes dir and its parents while they are empty,
// stopping at root, so that a drop folder empties as its images go.
func removeEmptyParents(dir, root string) {
	root = filepath.Clean(root)
	for dir = filepath.Clean(dir); dir != root && strings.HasPrefix(dir, root+string(filepath.Separator)); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			return
		}
	}
}
