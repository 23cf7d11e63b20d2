package watcher

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// walkCtx lists dir and every folder below it, calling visit for each
// regular file. When events are in use, each folder's watch is added just
// before the folder is read, so a file created after the read sends an event
// and one created before it is in the listing. Symbolic links are not
// followed (see link). It returns an error only when ctx ends or dir itself
// cannot be read; a folder below it that cannot be read is logged and
// skipped.
func (r *run) walkCtx(ctx context.Context, dir string, visit func(string, *fileInfo)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	r.watchDir(dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		p := join(dir, e.Name())
		t := e.Type()
		switch {
		case t.IsDir():
			err := r.walkCtx(ctx, p, visit)
			if ctxErr := ctx.Err(); ctxErr != nil {
				return ctxErr
			}
			if err != nil && !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, syscall.ENOTDIR) {
				r.unreadable(p, err)
			}
		case t.IsRegular():
			fi, err := e.Info() // an lstat: size and modification time
			if err != nil || !fi.Mode().IsRegular() {
				continue // removed or replaced since the folder was read: its event follows
			}
			visit(p, r.compact(p, fi))
		case t&fs.ModeSymlink != 0:
			r.link(p)
		default:
			// Pipes, sockets and devices are not files anyone drops.
		}
	}
	return nil
}

// join is filepath.Join for a clean dir and a plain name, without Join's
// cleaning pass over the whole path.
func join(dir, name string) string {
	if strings.HasSuffix(dir, string(filepath.Separator)) {
		return dir + name
	}
	return dir + string(filepath.Separator) + name
}

// fileInfo is a compact fs.FileInfo: what the consumer needs, without the
// platform's full stat record, so a listing of many files holds little.
type fileInfo struct {
	name    string
	size    int64
	mode    fs.FileMode
	modTime time.Time
}

func (fi *fileInfo) Name() string       { return fi.name }
func (fi *fileInfo) Size() int64        { return fi.size }
func (fi *fileInfo) Mode() fs.FileMode  { return fi.mode }
func (fi *fileInfo) ModTime() time.Time { return fi.modTime }
func (fi *fileInfo) IsDir() bool        { return fi.mode.IsDir() }
func (fi *fileInfo) Sys() any           { return nil }

const slabSize = 1024

// compact copies fi into a fileInfo carved from the current chunk. Its name
// shares the memory of path, which ends with it.
func (r *run) compact(path string, fi fs.FileInfo) *fileInfo {
	if len(r.slab) == cap(r.slab) {
		r.slab = make([]fileInfo, 0, slabSize)
	}
	name := fi.Name()
	if strings.HasSuffix(path, name) {
		name = path[len(path)-len(name):]
	}
	r.slab = append(r.slab, fileInfo{name: name, size: fi.Size(), mode: fi.Mode(), modTime: fi.ModTime()})
	return &r.slab[len(r.slab)-1]
}
