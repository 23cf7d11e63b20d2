package ingest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gcingest/gcingest/durable"
	"github.com/gcingest/gcingest/ingest/group"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
)

// stepAfter performs the after-upload action of a done (or duplicate)
// image once, and records it. A move's target is committed before the
// first rename (doneTarget), so that after a crash between them, or
// between the last rename and the commit that follows, the move is
// finished into the same folder or found done there.
func (s *steps) stepAfter(ctx context.Context, img *state.Image) error {
	w, err := s.watchOf(img)
	if err != nil {
		return err
	}
	movedTo := img.MovedTo
	if movedTo != "" {
		// A committed move is finished, whatever the config says now.
		w.AfterUpload = watch.AfterUploadMove
	} else {
		// A duplicate, or a done image recorded before targets were.
		if movedTo = doneTarget(img, w); movedTo != "" {
			if err := s.save(img, func(r *state.Image) { r.MovedTo = movedTo }); err != nil {
				return err
			}
		}
	}
	if err := afterAction(ctx, img, w, movedTo); err != nil {
		return err
	}
	removeSpools(img)
	if movedTo != "" {
		s.log.Info("files moved", "id", img.ID, "key", img.Key, "to", movedTo)
	}
	return s.save(img, func(r *state.Image) {
		r.ActionDone, r.MovedTo = true, movedTo
		if r.State == state.Done {
			r.State, r.Finished = state.Finished, s.cfg.Now().UTC()
		}
	})
}

// doneTarget is the folder a done image's files are moved to, or "" when
// the watch does not move them. It is computed once and committed before
// the first rename: recomputed after a crash between a rename and its
// commit, it could name another image's files (a name clash sends this
// image to done_dir/<id>, and the clashing file looks just like this
// image's moved one).
func doneTarget(img *state.Image, w Watch) string {
	if w.AfterUpload != watch.AfterUploadMove || w.DoneDir == "" {
		return ""
	}
	return moveTarget(img, w.DoneDir)
}

// afterAction keeps, moves (to movedTo, the committed doneTarget) or
// deletes the image's files as the watch says. Doing it twice is harmless.
// A file is moved or deleted only once it is proven to hold what was sent
// (uploadedOnly).
func afterAction(ctx context.Context, img *state.Image, w Watch, movedTo string) error {
	if w.AfterUpload == watch.AfterUploadMove || w.AfterUpload == watch.AfterUploadDelete {
		var err error
		if img, err = uploadedOnly(ctx, img); err != nil {
			return err
		}
	}
	switch w.AfterUpload {
	case "", watch.AfterUploadKeep:
		return nil
	case watch.AfterUploadMove:
		if movedTo == "" {
			return inputErrorf("after_upload = move but watch %s has no done_dir", w.Path)
		}
		_, err := moveFiles(ctx, img, movedTo)
		return err
	case watch.AfterUploadDelete:
		for _, f := range img.Files {
			if err := os.Remove(f.Path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("delete uploaded %s: %w", f.Path, err)
			}
			removeEmptyParents(filepath.Dir(f.Path), img.Watch)
		}
		return nil
	}
	return inputErrorf("unknown after_upload %q for watch %s", w.AfterUpload, w.Path)
}

// uploadedOnly returns img with only the files that still hold what was
// uploaded, or are already gone. Size and modification time are not proof
// (a same-size rewrite with its time set back passes them): the file must
// be the one hashed (device, inode, change time) or hash the same again
// (contentIsHashed). A file written again under the same name since (a
// scanner exporting again) holds content the archive does not have: it
// stays in the drop folder, where the watcher finds it as a new image.
func uploadedOnly(ctx context.Context, img *state.Image) (*state.Image, error) {
	out := *img
	out.Files = nil
	for _, f := range img.Files {
		if _, err := os.Lstat(f.Path); errors.Is(err, os.ErrNotExist) || f.SHA256 == "" {
			out.Files = append(out.Files, f) // moved or deleted by an earlier attempt
			continue
		}
		same, err := contentIsHashed(ctx, f.Path, f)
		var ie *inputError
		if errors.As(err, &ie) {
			continue // not a regular file any more, or unreadable: not ours to move
		}
		if err != nil {
			return nil, err
		}
		if same {
			out.Files = append(out.Files, f)
		}
	}
	return &out, nil
}

// stepFailedFiles aborts the failed image's open uploads and moves its
// files to failed_dir with the reason beside them (or leaves them in place
// when there is no failed_dir), once.
func (s *steps) stepFailedFiles(ctx context.Context, img *state.Image) error {
	if err := s.up.abortOpen(ctx, img); err != nil {
		// Keep the image failed; try the abort again later.
		if ctx.Err() != nil {
			return err
		}
		next := s.cfg.Now().Add(s.cfg.backoff(img.Attempts + 1))
		s.log.Warn("could not abort the uploads of a failed image; trying again later", "id", img.ID, "err", err)
		if err := s.save(img, func(r *state.Image) { r.Attempts++ }); err != nil {
			return err // a storeError: the pipeline stops (PATTERNS.md, rule 4)
		}
		return &waitError{at: next}
	}
	removeSpools(img)
	w, _ := s.watchOf(img)
	movedTo := ""
	// Files gathered from done_dir for a late slice (series.go) landed
	// before, in the item: they stay where they are.
	own := grouperFiles(img)
	empty := s.leftEmpty(ctx, img)
	if w.FailedDir != "" {
		// Where the files go is committed before the first rename: after
		// a crash between a rename and the commit, a target recomputed
		// from what is on disk could name another image's files (a name
		// clash sends this image to failed_dir/<id>, and the clashing
		// file looks just like this image's moved one), and a retry would
		// bring that file back as this image.
		movedTo = img.MovedTo
		if movedTo == "" {
			movedTo = moveTarget(own, w.FailedDir)
			if err := s.save(img, func(r *state.Image) { r.MovedTo = movedTo }); err != nil {
				return err
			}
		}
		if _, err := moveFiles(ctx, own, movedTo); err != nil {
			if ctx.Err() != nil {
				return err
			}
			// Left where they are (nothing is lost, and the watcher knows
			// them): the record says so, and where any did go.
			left := "left in " + img.Watch
			if !anyMovedTo(own, movedTo) {
				movedTo = ""
			} else {
				left = "some are in " + movedTo + ", the rest " + left
			}
			s.log.Error("could not move the files of a failed image to failed_dir", "id", img.ID, "key", img.Key, "files", left, "err", err)
			note := fmt.Sprintf("; its files could not be moved to failed_dir (%v): %s", err, left)
			return s.save(img, func(r *state.Image) {
				r.ActionDone, r.MovedTo, r.LastError, r.EmptyItem = true, movedTo, r.LastError+note, empty
			})
		} else {
			for _, n := range failureNotes(own) {
				note := filepath.Join(movedTo, filepath.FromSlash(n.Rel))
				if err := durable.WriteFile(note, []byte(n.Text), 0o644); err != nil {
					s.log.Error("could not write the error note", "file", note, "err", err)
				}
			}
		}
	}
	return s.save(img, func(r *state.Image) { r.ActionDone, r.MovedTo, r.EmptyItem = true, movedTo, empty })
}

// leftEmpty reports whether the failed img leaves an archive item that
// holds no value at all (created for it, and its import failed): the API
// cannot delete items, so status names it for removal in the web
// interface. An item named by item.txt is the user's; one that cannot be
// read now is not reported (logged).
func (s *steps) leftEmpty(ctx context.Context, img *state.Image) bool {
	if img.ItemPK == "" || img.TargetItem {
		return false
	}
	it, err := s.api.ArchiveItem(ctx, img.ItemPK)
	if err != nil {
		s.log.Warn("could not read the item of a failed image to tell whether it is left empty", "id", img.ID, "item", img.ItemPK, "err", err)
		return false
	}
	if len(it.Values) > 0 {
		return false
	}
	s.log.Warn("archive item left empty by a failed image; the API cannot delete it: remove it in the web interface",
		"id", img.ID, "item", img.ItemPK, "title", img.Title)
	return true
}

// grouperFiles returns img with only the files the grouper returned: the
// gathered ones left out.
func grouperFiles(img *state.Image) *state.Image {
	if !slices.ContainsFunc(img.Files, func(f state.File) bool { return f.Gathered }) {
		return img
	}
	out := *img
	out.Files = slices.DeleteFunc(slices.Clone(img.Files), func(f state.File) bool { return f.Gathered })
	return &out
}

// anyMovedTo reports whether any of img's files is at base/<rel> and no
// longer at its source.
func anyMovedTo(img *state.Image, base string) bool {
	for _, f := range img.Files {
		_, src := os.Lstat(f.Path)
		_, dst := os.Lstat(filepath.Join(base, filepath.FromSlash(f.Rel)))
		if errors.Is(src, os.ErrNotExist) && dst == nil {
			return true
		}
	}
	return false
}

// restoreFailed moves a failed image's files back from failed_dir to where
// they were found, for gcingest retry, and returns the relative paths of
// the files the operator removed from failed_dir meanwhile (not an error:
// the image is sent as it now is). Everything is checked before anything
// moves: a file is moved back only when it is the one recorded (the same
// size and modification time, and the same content, hashed again);
// anything else in its place (another image's file of the same name)
// refuses the retry with nothing moved. A folder item whose folder can go
// back whole goes back in one rename, files the operator added included.
func restoreFailed(img *state.Image) ([]string, error) {
	ctx := context.Background() // a retry from the command line: short, run by hand
	var move []state.File
	var removed []string
	for _, f := range img.Files {
		if f.Gathered {
			continue // never moved (series.go)
		}
		from := filepath.Join(img.MovedTo, filepath.FromSlash(f.Rel))
		if _, err := os.Lstat(f.Path); err == nil {
			continue // already back
		}
		if _, err := os.Lstat(from); errors.Is(err, os.ErrNotExist) {
			removed = append(removed, f.Rel)
			continue
		}
		if f.SHA256 != "" {
			same, err := contentIsHashed(ctx, from, state.File{Size: f.Size, ModTime: f.ModTime, SHA256: f.SHA256})
			if err != nil {
				return nil, fmt.Errorf("check %s before moving it back: %w", from, err)
			}
			if !same {
				return nil, inputErrorf("%s is not the file this image recorded (size, time or content differ); nothing was moved back", from)
			}
		}
		move = append(move, f)
	}
	if len(removed) == len(grouperFiles(img).Files) {
		gone := make([]string, len(removed))
		for i, rel := range removed {
			gone[i] = filepath.Join(img.MovedTo, filepath.FromSlash(rel))
		}
		return nil, inputErrorf("every file of image %d was removed from failed_dir (%s); nothing to retry", img.ID, strings.Join(firstN(gone, 3), ", "))
	}
	if !restoreFolder(img, move) {
		for _, f := range move {
			if err := os.MkdirAll(filepath.Dir(f.Path), 0o755); err != nil {
				return nil, fmt.Errorf("make folder for %s: %w", f.Path, err)
			}
			if err := moveFile(ctx, filepath.Join(img.MovedTo, filepath.FromSlash(f.Rel)), f.Path); err != nil {
				return nil, err
			}
		}
	}
	for _, n := range failureNotes(img) {
		os.Remove(filepath.Join(img.MovedTo, filepath.FromSlash(n.Rel)))
	}
	return removed, nil
}

// restoreFolder moves a folder item's folder back from failed_dir in one
// rename, when every file to restore is in it and nothing stands in its
// place in the drop folder, so that no half-restored folder is ever seen
// by the grouper as a new item. It reports whether it did.
func restoreFolder(img *state.Image, move []state.File) bool {
	if Kind(img.Kind) != KindFolder || len(move) == 0 {
		return false
	}
	from := filepath.Join(img.MovedTo, filepath.FromSlash(img.Key))
	to := filepath.Join(img.Watch, filepath.FromSlash(img.Key))
	if _, err := os.Lstat(to); err == nil {
		return false
	}
	for _, f := range move {
		if f.Path != filepath.Join(img.Watch, filepath.FromSlash(f.Rel)) {
			return false // recorded elsewhere than where the folder goes
		}
	}
	return os.Rename(from, to) == nil
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

// moveTarget is the folder the image's files go to in dir: dir itself,
// or dir/<id> when a target name is already taken, so that nothing is
// overwritten.
func moveTarget(img *state.Image, dir string) string {
	for _, f := range img.Files {
		to := filepath.Join(dir, filepath.FromSlash(f.Rel))
		if f.Path == to {
			continue // gathered from there (series.go): in place already
		}
		if _, err := os.Lstat(to); err == nil {
			if _, serr := os.Lstat(f.Path); serr == nil {
				return filepath.Join(dir, fmt.Sprintf("%06d", img.ID))
			}
		}
	}
	return dir
}

// moveFiles moves the image's files to base/<rel>, making folders. A file
// already moved (absent at its source) counts as moved, so a repeated call
// after a crash finishes the job. A target taken by another file is not
// overwritten. It returns base.
func moveFiles(ctx context.Context, img *state.Image, base string) (string, error) {
	for _, f := range img.Files {
		to := filepath.Join(base, filepath.FromSlash(f.Rel))
		if f.Path == to {
			continue // gathered from there (series.go): in place already
		}
		if _, err := os.Lstat(f.Path); errors.Is(err, os.ErrNotExist) {
			continue // moved by an earlier attempt, or deleted by someone
		}
		if _, err := os.Lstat(to); err == nil {
			return "", fmt.Errorf("move %s to %s: the target exists; not overwriting it", f.Path, to)
		}
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			return "", fmt.Errorf("make folder for %s: %w", to, err)
		}
		if err := moveFile(ctx, f.Path, to); err != nil {
			return "", err
		}
		removeEmptyParents(filepath.Dir(f.Path), img.Watch)
	}
	return base, nil
}

// moveFile renames from to to; across file systems it copies to a temporary
// name beside the target in chunks that stop when ctx is done, syncs,
// renames into place and removes the source.
func moveFile(ctx context.Context, from, to string) error {
	err := os.Rename(from, to)
	if err == nil || !errors.Is(err, syscall.EXDEV) {
		if err != nil {
			return fmt.Errorf("move %s to %s: %w", from, to, err)
		}
		return nil
	}
	return copyMove(ctx, from, to)
}

// copyMove is moveFile across file systems.
func copyMove(ctx context.Context, from, to string) error {
	in, fi, err := openSource(from, "before it was moved")
	if err != nil {
		return fmt.Errorf("move %s: %w", from, err)
	}
	defer in.Close()
	err = durable.Write(to, 0o644, func(out *os.File) error {
		if _, err := copyCtx(ctx, out, in); err != nil {
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
