package ingest

import (
	"archive/zip"
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/gcingest/gcingest/durable"
	"github.com/gcingest/gcingest/state"
)

// zipTime is the modification time of every ZIP entry, so that the same
// files always make the same bytes.
var zipTime = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// ensureSpools builds the ZIPs and writes the JSON files the item's
// unfinished uploads send, when they are missing (or not the size
// recorded), and records a new ZIP's size. Both are deterministic (fixed
// order and timestamps), so a resumed upload sends the bytes it started
// with. A source file that changed since it was hashed sends the image
// back to pending instead.
func (ul *uploader) ensureSpools(ctx context.Context, img *state.Image) error {
	for _, v := range img.Values {
		if v.Kind != state.ValueFile || len(v.JSON) == 0 || len(v.Uploads) != 1 {
			continue
		}
		u := img.Uploads[v.Uploads[0]]
		if u.Completed {
			continue
		}
		if fi, err := os.Stat(u.Path); err == nil && fi.Size() == int64(len(v.JSON)) {
			continue
		}
		if err := os.MkdirAll(ul.cfg.SpoolDir, 0o755); err != nil {
			return fmt.Errorf("make spool folder %s: %w", ul.cfg.SpoolDir, err)
		}
		if err := durable.WriteFile(u.Path, v.JSON, 0o644); err != nil {
			return fmt.Errorf("write %s for %s: %w", u.Path, v.Interface, err)
		}
	}
	for i, u := range img.Uploads {
		if len(u.ZipOf) == 0 || u.Completed {
			continue
		}
		if fi, err := os.Stat(u.Path); err == nil && u.Size > 0 && fi.Size() == u.Size {
			continue
		}
		changed, err := changedFile(img, "before it was zipped")
		if err != nil {
			return err
		}
		if changed != "" {
			return ul.backToPending(ctx, img, changed)
		}
		var files []state.File
		for _, f := range img.Files {
			if slices.Contains(u.ZipOf, f.Rel) {
				files = append(files, f)
			}
		}
		// DICOM groups are checked and, when asked, de-identified (deid.go).
		size, err := ul.writeSpoolZip(ctx, img, u.Path, files)
		if err != nil {
			return err
		}
		if changed, err := changedFile(img, "while it was zipped"); err != nil || changed != "" {
			os.Remove(u.Path)
			if err != nil {
				return err
			}
			return ul.backToPending(ctx, img, changed)
		}
		if u.PK != "" && u.Size != size {
			// Cannot happen with a deterministic ZIP of unchanged files; if
			// it does, the started upload is for other bytes: start over.
			return ul.backToPending(ctx, img, u.Path)
		}
		if err := ul.save(img, func(r *state.Image) { r.Uploads[i].Size = size }); err != nil {
			return err
		}
	}
	return nil
}

// removeSpools deletes the item's spool files: its ZIPs and JSON files.
func removeSpools(img *state.Image) {
	for _, u := range img.Uploads {
		if len(u.ZipOf) > 0 {
			os.Remove(u.Path)
		}
	}
	for _, v := range img.Values {
		if v.Kind == state.ValueFile && len(v.JSON) > 0 && len(v.Uploads) == 1 && v.Uploads[0] < len(img.Uploads) {
			os.Remove(img.Uploads[v.Uploads[0]].Path)
		}
	}
}

// writeZip writes the files, sorted by relative path and stored relative
// to their common folder, into a ZIP at name (temp file, fsync, rename).
func writeZip(ctx context.Context, name string, files []state.File) (int64, error) {
	prefix := commonDir(files)
	return writeZipWith(ctx, name, files, func(zw *zip.Writer, _ int, sf state.File) error {
		return zipOne(ctx, zw, sf, prefix)
	})
}

// writeZipWith writes a ZIP at name (temp file, fsync, rename) whose
// entries entry adds, one per file, in the order of their relative paths.
func writeZipWith(ctx context.Context, name string, files []state.File, entry func(zw *zip.Writer, i int, sf state.File) error) (int64, error) {
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return 0, fmt.Errorf("make spool folder for %s: %w", name, err)
	}
	sorted := slices.Clone(files)
	slices.SortFunc(sorted, func(a, b state.File) int { return strings.Compare(a.Rel, b.Rel) })
	var size int64
	err := durable.Write(name, 0o600, func(f *os.File) error {
		zw := zip.NewWriter(f)
		for i, sf := range sorted {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := entry(zw, i, sf); err != nil {
				return err
			}
		}
		if err := zw.Close(); err != nil {
			return fmt.Errorf("finish zip %s: %w", name, err)
		}
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("stat %s: %w", f.Name(), err)
		}
		size = fi.Size()
		return nil
	})
	if err != nil {
		return 0, err
	}
	return size, nil
}

// zipOne stores the file sf in zw, named relative to prefix, with the
// fixed time and mode that make the ZIP deterministic. The file is opened
// without following a symbolic link and copied in chunks that stop when
// ctx is done, so a cancelled build of a large ZIP returns at once.
func zipOne(ctx context.Context, zw *zip.Writer, sf state.File, prefix string) error {
	hdr := &zip.FileHeader{Name: strings.TrimPrefix(sf.Rel, prefix), Method: zip.Store, Modified: zipTime}
	hdr.SetMode(0o644)
	w, err := zw.CreateHeader(hdr)
	if err != nil {
		return fmt.Errorf("zip %s: %w", sf.Path, err)
	}
	src, _, err := openSource(sf.Path, "before upload")
	if err != nil {
		return err
	}
	defer src.Close()
	if _, err := copyCtx(ctx, w, src); err != nil {
		return fmt.Errorf("zip %s: %w", sf.Path, err)
	}
	return nil
}

// commonDir is the folder prefix ("a/b/") all files share, or "".
func commonDir(files []state.File) string {
	if len(files) == 0 {
		return ""
	}
	dir := path.Dir(files[0].Rel)
	for _, f := range files[1:] {
		for dir != "." && !strings.HasPrefix(f.Rel, dir+"/") {
			dir = path.Dir(dir)
		}
	}
	if dir == "." {
		return ""
	}
	return dir + "/"
}
