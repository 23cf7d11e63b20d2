package complete

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// NIfTI-1 (348-byte header, magic "n+1" at 344) and NIfTI-2 (540 bytes,
// magic "n+2\0\r\n\032\n" at 4), either byte order, told apart by
// sizeof_hdr. A single-file .nii holds vox_offset bytes of header and
// extensions, then prod(dim[1..dim[0]]) × bitpix/8 bytes of voxels.
const (
	nifti1HeaderSize = 348
	nifti2HeaderSize = 540
)

// niftiHeader is the part of a NIfTI header that sizes the file.
type niftiHeader struct {
	version  int
	hdrSize  int64
	dataEnd  int64 // vox_offset + voxel bytes
	voxBytes int64
}

// niftiPrefixes are the first four bytes of the two headers in both byte
// orders (sizeof_hdr).
var niftiPrefixes = [][]byte{{0x5c, 1, 0, 0}, {0, 0, 1, 0x5c}, {0x1c, 2, 0, 0}, {0, 0, 2, 0x1c}}

// niftiVersion returns the version and byte order sizeof_hdr says, or 0.
func niftiVersion(b []byte) (int, binary.ByteOrder) {
	le, be := binary.LittleEndian.Uint32(b), binary.BigEndian.Uint32(b)
	switch {
	case le == nifti1HeaderSize:
		return 1, binary.LittleEndian
	case be == nifti1HeaderSize:
		return 1, binary.BigEndian
	case le == nifti2HeaderSize:
		return 2, binary.LittleEndian
	case be == nifti2HeaderSize:
		return 2, binary.BigEndian
	}
	return 0, nil
}

// isPrefixOfAny reports whether b is a proper prefix of one of ps: the start
// of a header still being written.
func isPrefixOfAny(b []byte, ps ...[]byte) bool {
	for _, p := range ps {
		if len(b) < len(p) && bytes.HasPrefix(p, b) {
			return true
		}
	}
	return false
}

// parseNIfTI reads a NIfTI header from the start of b (which holds at least
// its first 4 bytes). need > 0 asks for more bytes (the header is longer).
func parseNIfTI(b []byte) (h niftiHeader, need int, err error) {
	if len(b) < 4 {
		if isPrefixOfAny(b, niftiPrefixes...) {
			return h, 4, nil
		}
		return h, 0, formatErr("NIfTI", "no NIfTI-1 or NIfTI-2 sizeof_hdr at the start")
	}
	v, bo := niftiVersion(b)
	if v == 0 {
		return h, 0, formatErr("NIfTI", "no NIfTI-1 or NIfTI-2 sizeof_hdr at the start")
	}
	h.version = v
	h.hdrSize = nifti1HeaderSize
	if v == 2 {
		h.hdrSize = nifti2HeaderSize
	}
	if int64(len(b)) < h.hdrSize {
		return h, int(h.hdrSize), nil
	}
	var (
		dims    [8]int64
		bitpix  int64
		voxOff  int64
		magicOK bool
	)
	if v == 1 {
		for i := range dims {
			dims[i] = int64(int16(bo.Uint16(b[40+2*i:])))
		}
		bitpix = int64(int16(bo.Uint16(b[72:])))
		f := float64(math.Float32frombits(bo.Uint32(b[108:])))
		if math.IsNaN(f) || f < 0 || f > 1<<40 || f != math.Trunc(f) {
			return h, 0, formatErr("NIfTI", "vox_offset %v is not a byte offset", f)
		}
		voxOff = int64(f)
		switch string(b[344:348]) {
		case "n+1\x00":
			magicOK = true
		case "ni1\x00":
			return h, 0, fmt.Errorf("NIfTI-1 header of a .hdr/.img pair in a .nii: %w", ErrNoProof)
		}
		// vox_offset 0 in an n+1 file is tolerated by readers as 352.
		if voxOff < 352 {
			voxOff = 352
		}
	} else {
		magicOK = string(b[4:12]) == "n+2\x00\r\n\x1a\n"
		for i := range dims {
			dims[i] = int64(bo.Uint64(b[16+8*i:]))
		}
		bitpix = int64(int16(bo.Uint16(b[14:])))
		voxOff = int64(bo.Uint64(b[168:]))
		if voxOff < 0 || voxOff > 1<<50 {
			return h, 0, formatErr("NIfTI", "vox_offset %d is not a byte offset", voxOff)
		}
		if voxOff < nifti2HeaderSize+4 {
			voxOff = nifti2HeaderSize + 4
		}
	}
	if !magicOK {
		return h, 0, formatErr("NIfTI", "no single-file NIfTI-%d magic", v)
	}
	if dims[0] < 1 || dims[0] > 7 {
		return h, 0, formatErr("NIfTI", "dim[0] = %d, not 1 to 7", dims[0])
	}
	if bitpix <= 0 || bitpix > 1024 {
		return h, 0, formatErr("NIfTI", "bitpix = %d", bitpix)
	}
	bits := bitpix
	for i := int64(1); i <= dims[0]; i++ {
		d := dims[i]
		if d < 0 {
			return h, 0, formatErr("NIfTI", "dim[%d] = %d", i, d)
		}
		if d != 0 && bits > (1<<62)/d {
			return h, 0, formatErr("NIfTI", "image size overflows")
		}
		bits *= d
	}
	h.voxBytes = (bits + 7) / 8
	h.dataEnd = voxOff + h.voxBytes
	return h, 0, nil
}

func checkNIfTI(r io.ReaderAt, size int64) error {
	b := make([]byte, min(size, nifti2HeaderSize))
	if err := readFull(r, b, 0); err != nil {
		return fmt.Errorf("read NIfTI header: %w", err)
	}
	h, need, err := parseNIfTI(b)
	switch {
	case err != nil:
		return err
	case need > 0:
		return &IncompleteError{Want: -1, Have: size}
	case size < h.dataEnd:
		return &IncompleteError{Want: h.dataEnd, Have: size}
	case size > h.dataEnd:
		return &OverlongError{Want: h.dataEnd, Have: size}
	}
	return nil
}

// gzip's fixed header: magic, method deflate.
var gzipMagic = []byte{0x1f, 0x8b, 8}

// checkNIfTIGz inflates just enough of a .nii.gz to read the NIfTI header,
// and compares the gzip trailer's ISIZE (the last 4 bytes, the uncompressed
// size mod 2^32) with the size the header implies. The rest of the stream is
// not inflated and its CRC is not checked: the trailer's size is the
// completeness proof, and the server's import reports a corrupt stream.
func checkNIfTIGz(r io.ReaderAt, size int64) error {
	var head [10]byte
	n, _ := r.ReadAt(head[:], 0)
	if n < 10 {
		if isPrefixOfAny(head[:n], gzipMagic) || bytes.HasPrefix(head[:n], gzipMagic) {
			return &IncompleteError{Want: -1, Have: size, Detail: "gzip header cut"}
		}
		return formatErr("gzip", "no gzip magic at the start")
	}
	if !bytes.HasPrefix(head[:], gzipMagic) {
		return formatErr("gzip", "no gzip magic at the start")
	}
	if head[3]&0x04 != 0 {
		// FEXTRA: BGZF and other block-wise writers make many members, and
		// the last member's ISIZE says nothing of the whole.
		return fmt.Errorf("gzip with extra fields (BGZF?): %w", ErrNoProof)
	}
	zr, err := gzip.NewReader(io.NewSectionReader(r, 0, size))
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return &IncompleteError{Want: -1, Have: size, Detail: "gzip header cut"}
		}
		return formatErr("gzip", "%v", err)
	}
	b := make([]byte, nifti2HeaderSize)
	m, rerr := readSome(zr, b)
	if rerr != nil && rerr != io.EOF && !errors.Is(rerr, io.ErrUnexpectedEOF) {
		return formatErr("gzip", "inflate: %v", rerr)
	}
	h, need, err := parseNIfTI(b[:m])
	switch {
	case err != nil:
		return err
	case need > 0 && rerr == io.EOF:
		return formatErr("NIfTI", "the gzip stream ends inside the NIfTI header")
	case need > 0:
		return &IncompleteError{Want: -1, Have: size, Detail: "gzip stream cut inside the NIfTI header"}
	}
	var tail [4]byte
	if size < 18 || readFull(r, tail[:], size-4) != nil {
		return &IncompleteError{Want: -1, Have: size, Detail: "no gzip trailer"}
	}
	if got := binary.LittleEndian.Uint32(tail[:]); got != uint32(h.dataEnd) {
		// A stream being written ends in compressed data, not in a trailer
		// that matches.
		return &IncompleteError{Want: -1, Have: size, Detail: fmt.Sprintf(
			"gzip trailer says %d bytes (mod 2^32), NIfTI header says %d: not the end of the stream", got, h.dataEnd)}
	}
	return nil
}

// readSome fills p from r until it is full or r fails, and returns r's own
// error: io.EOF at a clean end of a gzip stream, io.ErrUnexpectedEOF when the
// stream is cut (io.ReadFull would blur the two).
func readSome(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		m, err := r.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
