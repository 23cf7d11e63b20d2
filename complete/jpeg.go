package complete

import (
	"encoding/binary"
	"fmt"
	"io"
)

// JPEG: SOI at the start; the marker segments up to the first SOS walked by
// their lengths (so that an EOI inside an embedded thumbnail is not taken
// for the end); and EOI as the file's last two bytes. Entropy-coded data
// cannot be skipped without reading it, so a cut inside it shows only as a
// missing EOI. Anything after EOI (zero padding, vendor trailers) is taken
// as not written yet: a writer still at work and a trailer look alike from
// the end of the file, and such files are rare among medical images.

var jpegSOI = []byte{0xff, 0xd8}

const maxJPEGSegments = 1 << 16

func checkJPEG(r io.ReaderAt, size int64) error {
	win := newWindow(r, size)
	soi, err := win.at(0, 2)
	if err != nil {
		return fmt.Errorf("read JPEG start: %w", err)
	}
	if len(soi) < 2 {
		if isPrefixOfAny(soi, jpegSOI) {
			return &IncompleteError{Want: -1, Have: size}
		}
		return formatErr("JPEG", "no SOI marker at the start")
	}
	if soi[0] != 0xff || soi[1] != 0xd8 {
		return formatErr("JPEG", "no SOI marker at the start")
	}
	off := int64(2)
	for n := 0; ; n++ {
		if n >= maxJPEGSegments {
			return fmt.Errorf("more than %d JPEG segments before the scan: %w", maxJPEGSegments, ErrNoProof)
		}
		h, err := win.at(off, 4)
		if err != nil {
			return fmt.Errorf("read JPEG segment at %d: %w", off, err)
		}
		if len(h) < 2 {
			return &IncompleteError{Want: off + 2, AtLeast: true, Have: size, Detail: "cut before the scan"}
		}
		if h[0] != 0xff {
			return formatErr("JPEG", "no marker at %d", off)
		}
		m := h[1]
		switch {
		case m == 0xff: // fill byte
			off++
			continue
		case m == 0xd9: // EOI before any scan: a tables-only stream
			return jpegEnd(off+2, size)
		case m == 0x01 || 0xd0 <= m && m <= 0xd7: // no length
			off += 2
			continue
		case m == 0xd8 || m == 0x00:
			return formatErr("JPEG", "marker %#x at %d", m, off)
		}
		if len(h) < 4 {
			return &IncompleteError{Want: off + 4, AtLeast: true, Have: size, Detail: "cut before the scan"}
		}
		length := int64(binary.BigEndian.Uint16(h[2:]))
		if length < 2 {
			return formatErr("JPEG", "segment %#x at %d has length %d", m, off, length)
		}
		end := off + 2 + length
		if end+2 > size {
			return &IncompleteError{Want: end + 2, AtLeast: true, Have: size, Detail: "cut before the scan"}
		}
		if m == 0xda { // SOS: entropy-coded data follows, then EOI at the end
			var tail [2]byte
			if err := readFull(r, tail[:], size-2); err != nil {
				return fmt.Errorf("read JPEG end: %w", err)
			}
			if tail[0] != 0xff || tail[1] != 0xd9 {
				return &IncompleteError{Want: -1, Have: size, Detail: "no EOI marker at its end"}
			}
			return nil
		}
		off = end
	}
}

// jpegEnd checks that a stream whose EOI ends at end is the whole file.
func jpegEnd(end, size int64) error {
	if end < size {
		return &OverlongError{Want: end, Have: size, Detail: "bytes after EOI"}
	}
	return nil
}
