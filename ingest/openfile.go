package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/gcingest/gcingest/state"
)

// openSource opens a source file for reading without following a symbolic
// link in its last element (where the platform allows), and checks on the
// open handle that it is a regular file. Whatever is read afterwards comes
// from this handle: a file swapped for a link to something else after the
// check cannot be what is sent.
func openSource(name, when string) (*os.File, os.FileInfo, error) {
	f, err := openNoFollow(name)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, nil, inputErrorf("%s was deleted %s", name, when)
	case errors.Is(err, os.ErrPermission):
		return nil, nil, inputErrorf("cannot read %s: permission denied", name)
	case isLinkErr(err):
		return nil, nil, inputErrorf("%s became a symbolic link %s; not following it", name, when)
	case err != nil:
		return nil, nil, fmt.Errorf("open %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("stat %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, inputErrorf("%s is not a regular file", name)
	}
	return f, fi, nil
}

// isLinkErr reports whether err is an O_NOFOLLOW open refused because the
// name is a symbolic link.
func isLinkErr(err error) bool {
	return errors.Is(err, syscall.ELOOP) || errors.Is(err, errSymlink)
}

var errSymlink = errors.New("is a symbolic link")

// sameAsHashed reports whether the open file fi is the one recorded at
// hashing: same size and modification time, and, where the platform tells
// them, the same device, inode and change time. A change time that moved
// means the content or the name may have been changed with the
// modification time set back.
func sameAsHashed(fi os.FileInfo, f state.File) bool {
	if fi.Size() != f.Size || !fi.ModTime().Equal(f.ModTime) {
		return false
	}
	return f.Ident == "" || fileIdent(fi) == f.Ident
}

// hashOpen returns the hex SHA-256 of what f holds, read from its start in
// chunks that stop when ctx is done.
func hashOpen(ctx context.Context, f *os.File) (string, error) {
	return hashOpenTo(ctx, f, nil)
}

// hashOpenTo is hashOpen telling read, when not nil, of the bytes read as
// they are.
func hashOpenTo(ctx context.Context, f *os.File, read func(n int64)) (string, error) {
	h := sha256.New()
	var dst io.Writer = h
	if read != nil {
		dst = readCounter{h, read}
	}
	if _, err := copyCtx(ctx, dst, io.NewSectionReader(f, 0, 1<<62)); err != nil {
		return "", fmt.Errorf("read %s: %w", f.Name(), err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyChunk is how much is copied between two looks at the context: a
// cancelled copy, hash or ZIP build returns within one chunk's time.
const copyChunk = 1 << 20

// copyBufs holds copyCtx's buffers: one per image hashed would be 128 KiB
// of garbage each.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 128<<10); return &b }}

// copyCtx copies src to dst in chunks, checking ctx before each.
func copyCtx(ctx context.Context, dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		m, err := io.CopyBuffer(dst, io.LimitReader(src, copyChunk), buf)
		n += m
		if err != nil {
			return n, err
		}
		if m < copyChunk {
			return n, nil
		}
	}
}

// contentIsHashed reports whether the file at name still holds what was
// hashed (and so what was sent): the same file (device, inode, change
// time) with the same size, or, where the platform does not tell, the same
// SHA-256 read again. Size and modification time alone are not proof: a
// same-size rewrite with its time set back passes them.
func contentIsHashed(ctx context.Context, name string, rec state.File) (bool, error) {
	f, fi, err := openSource(name, "after upload")
	if err != nil {
		return false, err
	}
	defer f.Close()
	if fi.Size() != rec.Size || !fi.ModTime().Equal(rec.ModTime) {
		return false, nil
	}
	if rec.Ident != "" && fileIdent(fi) == rec.Ident {
		return true, nil
	}
	if rec.SHA256 == "" {
		return false, nil
	}
	sum, err := hashOpen(ctx, f)
	if err != nil {
		return false, err
	}
	return sum == rec.SHA256, nil
}

// readCounter passes writes to w and tells read how many bytes went.
type readCounter struct {
	w    io.Writer
	read func(n int64)
}

func (c readCounter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.read(int64(n))
	return n, err
}
