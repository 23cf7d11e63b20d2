// Package complete proves, from a file's own header, that an image file is
// completely written: a settle time is a guess (a scanner or a share may
// stall longer than any settle mid-file), a header that says how long the
// file is, or where its last piece lies, is a proof.
//
// Proofs read headers and small pieces with ReadAt, never the whole file.
// A gzip stream (.nii.gz, gzip-encoded NRRD data) is proven by its header
// and by its trailer's size (ISIZE, the uncompressed size mod 2^32), which
// must match what the image header implies. It is not inflated beyond a
// .nii.gz's NIfTI header, and its CRC is not checked: a CRC tells
// corruption, not completeness, and the server's import reports a corrupt
// stream. Every proof is bounded: counts a header declares never size an
// allocation, and chains (TIFF IFDs, PNG chunks) have caps.
//
// A proof that cannot tell is never a failure: formats or forms without a
// proof here give ErrNoProof, and the caller falls back on settle times.
package complete

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
)

// ErrNoProof says that Check has no proof for the file's format or for the
// form this file takes (a detached NRRD, compressed MetaImage data without
// CompressedDataSize, an NDPI of 4 GiB or more, …). Callers fall back on
// settle times.
var ErrNoProof = errors.New("no completeness proof for this format")

// IncompleteError says that the file is shorter than its header says: it is
// being written, or was cut.
type IncompleteError struct {
	// Want is the size the header implies, or -1 when the file ends before
	// the header does (or before the header says how long the file is).
	Want int64
	// AtLeast marks Want as a lower bound: the header says the file goes on
	// at least that far (a TIFF directory beyond the end, a PNG chunk cut).
	AtLeast bool
	Have    int64  // the file's size
	Detail  string // what was cut, when that helps
}

func (e *IncompleteError) Error() string {
	var s string
	switch {
	case e.Want < 0:
		s = fmt.Sprintf("incomplete (file has %d bytes)", e.Have)
		if e.Detail == "" {
			return s + ": it ends inside its header"
		}
	case e.AtLeast:
		s = fmt.Sprintf("incomplete (header says at least %d bytes, file has %d)", e.Want, e.Have)
	default:
		s = fmt.Sprintf("incomplete (header says %d bytes, file has %d)", e.Want, e.Have)
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// OverlongError says that the file is longer than its header says, in a
// format whose header defines where the file ends: the header is wrong, or
// something was appended.
type OverlongError struct {
	Want, Have int64
	Detail     string
}

func (e *OverlongError) Error() string {
	s := fmt.Sprintf("longer than its header says (header says %d bytes, file has %d)", e.Want, e.Have)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// FormatError says that the header or structure of a file of a format with
// a proof is inconsistent, so that no amount of waiting makes it complete.
type FormatError struct {
	Format string // "PNG", "TIFF", …
	Msg    string
}

func (e *FormatError) Error() string { return "not a valid " + e.Format + " file: " + e.Msg }

func formatErr(format, f string, args ...any) error {
	return &FormatError{Format: format, Msg: fmt.Sprintf(f, args...)}
}

// Check proves that the file named name (its extension picks the format), of
// the given size, readable through r, is complete by its own header. It
// returns nil when proven complete; an error wrapping ErrNoProof when the
// format, or this file's form of it, has no proof here; *IncompleteError when
// the file is shorter than its header says; *OverlongError when it is longer
// than its header says in a format that defines its end; *FormatError when
// the header or structure is inconsistent. Any other error is a read error.
func Check(r io.ReaderAt, size int64, name string) error {
	switch ext(name) {
	case ".mha":
		return checkMHA(r, size)
	case ".mhd":
		return checkMHDLocal(r, size)
	case ".nii":
		return checkNIfTI(r, size)
	case ".nii.gz":
		return checkNIfTIGz(r, size)
	case ".nrrd":
		return checkNRRD(r, size)
	case ".tif", ".tiff":
		return checkTIFF(r, size, false)
	case ".svs", ".scn", ".bif":
		return checkTIFF(r, size, true)
	case ".ndpi":
		// NDPI keeps 32-bit TIFF offsets and adds the high bits elsewhere
		// once a file passes 4 GiB; below that it is plain TIFF.
		if size >= 1<<32 {
			return fmt.Errorf("ndpi of 4 GiB or more: %w", ErrNoProof)
		}
		return checkTIFF(r, size, true)
	case ".png":
		return checkPNG(r, size)
	case ".jpg", ".jpeg":
		return checkJPEG(r, size)
	}
	return ErrNoProof
}

// Supported reports whether Check has a proof for name's format (some files
// of it may still give ErrNoProof, see there).
func Supported(name string) bool {
	switch ext(name) {
	case ".mha", ".mhd", ".nii", ".nii.gz", ".nrrd", ".tif", ".tiff", ".svs", ".scn", ".bif", ".ndpi",
		".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// ext is name's lower-case extension, ".nii.gz" taken whole.
func ext(name string) string {
	base := path.Base(strings.ReplaceAll(name, `\`, "/"))
	if len(base) >= 7 && strings.EqualFold(base[len(base)-7:], ".nii.gz") {
		return ".nii.gz"
	}
	return strings.ToLower(path.Ext(base))
}

// readFull reads len(p) bytes at off; a read that hits the end of the file
// returns io.ErrUnexpectedEOF (or io.EOF when nothing was read), as
// io.ReadFull does.
func readFull(r io.ReaderAt, p []byte, off int64) error {
	n, err := r.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		if n == 0 {
			return io.EOF
		}
		return io.ErrUnexpectedEOF
	}
	return err
}

// window serves many small reads near each other (PNG chunk headers, JPEG
// segment headers) from one ReadAt of a few hundred bytes, so that a file of
// tiny chunks does not cost a system call per chunk, while a file of large
// chunks costs one small read per chunk, not a pass over the data.
type window struct {
	r     io.ReaderAt
	size  int64
	start int64
	buf   []byte
	n     int
}

const windowSize = 512

func newWindow(r io.ReaderAt, size int64) *window {
	return &window{r: r, size: size, start: -1, buf: make([]byte, windowSize)}
}

// at returns n (≤ windowSize) bytes at off, or fewer when the file ends
// first; the slice is valid until the next call.
func (w *window) at(off int64, n int) ([]byte, error) {
	if off < 0 || off >= w.size {
		return nil, nil
	}
	if w.start < 0 || off < w.start || off+int64(n) > w.start+int64(w.n) {
		want := int64(len(w.buf))
		if rest := w.size - off; rest < want {
			want = rest
		}
		m, err := w.r.ReadAt(w.buf[:want], off)
		if m < int(want) && err != nil && err != io.EOF {
			w.start = -1
			return nil, err
		}
		w.start, w.n = off, m
	}
	b := w.buf[off-w.start : w.n]
	if len(b) > n {
		b = b[:n]
	}
	return b, nil
}
