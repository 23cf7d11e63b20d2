package group

// A small DICOM Part-10 header reader. The grouper needs three UIDs and one
// fact: does the file parse to its end. A full DICOM library (the issue names
// github.com/suyashkumar/dicom) is not available to this module, and this
// much needs no dictionary: element lengths are explicit in every transfer
// syntax we meet, so values we do not need are skipped by offset, never read.
// Pixel data in particular is never read, only checked to be fully present.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
)

// errDICOMIncomplete means the file ends inside an element: it is still
// being written (or was truncated) and is not ready.
var errDICOMIncomplete = errors.New("file ends inside a DICOM element")

// dicomHeader holds the top-level attributes the grouper groups by.
type dicomHeader struct {
	Study, Series, SOPClass string
	TransferSyntax          string
	// UIDsKnown says the parse got past (0020,000E), so a missing Series
	// means the file has none rather than that it was cut short before it.
	UIDsKnown bool
}

// Transfer syntaxes whose data set encoding differs from explicit VR little
// endian.
const (
	tsImplicitLE = "1.2.840.10008.1.2"
	tsExplicitBE = "1.2.840.10008.1.2.2"
	tsDeflated   = "1.2.840.10008.1.2.1.99"
)

const (
	dicomMagicOffset = 128
	dicomPrefixLen   = 132
	undefinedLength  = 0xFFFFFFFF
	maxDICOMDepth    = 32   // nested sequences; deeper is treated as broken
	maxValueRead     = 1024 // the longest value we read into memory (UIDs are ≤ 64)
	dicomWindow      = 32 << 10
)

// Tags as group<<16 | element.
const (
	tagMetaSOPClass      = 0x00020002
	tagTransferSyntax    = 0x00020010
	tagSOPClass          = 0x00080016
	tagStudyUID          = 0x0020000D
	tagSeriesUID         = 0x0020000E
	tagRows              = 0x00280010
	tagFloatPixelData    = 0x7FE00008
	tagDoublePixelData   = 0x7FE00009
	tagPixelData         = 0x7FE00010
	tagItem              = 0xFFFEE000
	tagItemDelimiter     = 0xFFFEE00D
	tagSequenceDelimiter = 0xFFFEE0DD
)

// isDICOMPrefix reports whether b (the first 132 bytes of a file) carries
// the Part-10 magic.
func isDICOMPrefix(b []byte) bool {
	return len(b) >= dicomPrefixLen && string(b[dicomMagicOffset:dicomPrefixLen]) == "DICM"
}

// readDICOMHeader parses a Part-10 file of the given size from r. It returns
// errDICOMIncomplete (possibly wrapped) when the file ends inside an element,
// and another error when the bytes are not a DICOM file it can follow. The
// header fields found before an error are returned with it.
func readDICOMHeader(r io.ReaderAt, size int64) (dicomHeader, error) {
	p := &dicomParser{r: r, size: size}
	var h dicomHeader
	prefix, err := p.bytes(dicomPrefixLen)
	if err != nil {
		return h, err
	}
	if !isDICOMPrefix(prefix) {
		return h, errors.New("no DICM magic at offset 128")
	}
	err = p.topLevel(&h)
	return h, err
}

type dicomParser struct {
	r      io.ReaderAt
	size   int64
	off    int64
	buf    []byte // window of the file starting at bufOff
	bufOff int64
	store  []byte // backing array of buf
}

// bytes returns the next n bytes (n ≤ dicomWindow) and advances; the slice
// is valid until the next call.
func (p *dicomParser) bytes(n int) ([]byte, error) {
	if n < 0 || int64(n) > p.size-p.off {
		return nil, errDICOMIncomplete
	}
	start := p.off - p.bufOff
	if p.off < p.bufOff || start+int64(n) > int64(len(p.buf)) {
		if p.store == nil {
			p.store = make([]byte, dicomWindow)
		}
		want := min(int64(len(p.store)), p.size-p.off)
		if int64(n) > want {
			return nil, errDICOMIncomplete
		}
		got, err := p.r.ReadAt(p.store[:want], p.off)
		if int64(got) < int64(n) {
			if err == nil || errors.Is(err, io.EOF) {
				return nil, errDICOMIncomplete
			}
			return nil, fmt.Errorf("read at offset %d: %w", p.off, err)
		}
		p.buf, p.bufOff, start = p.store[:got], p.off, 0
	}
	p.off += int64(n)
	return p.buf[start : start+int64(n)], nil
}

// skip advances over n bytes that must all be present in the file.
func (p *dicomParser) skip(n int64) error {
	if n < 0 || n > p.size-p.off {
		return errDICOMIncomplete
	}
	p.off += n
	return nil
}

// syntax is how a data set is encoded.
type syntax struct {
	explicit bool
	bo       binary.ByteOrder
}

var metaSyntax = syntax{explicit: true, bo: binary.LittleEndian}

// element is one element header.
type element struct {
	tag    uint32
	vr     string
	length uint32
}

// readElement reads one element header in syntax s.
func (p *dicomParser) readElement(s syntax) (element, error) {
	b, err := p.bytes(4)
	if err != nil {
		return element{}, err
	}
	e := element{tag: uint32(s.bo.Uint16(b))<<16 | uint32(s.bo.Uint16(b[2:]))}
	if e.tag>>16 == 0xFFFE || !s.explicit {
		// Items and delimiters have no VR in any syntax.
		if b, err = p.bytes(4); err != nil {
			return e, err
		}
		e.length = s.bo.Uint32(b)
		return e, nil
	}
	if b, err = p.bytes(4); err != nil {
		return e, err
	}
	e.vr = vrName(b[0], b[1])
	if e.vr == "" {
		return e, fmt.Errorf("element (%04X,%04X) at offset %d: invalid VR %q", e.tag>>16, e.tag&0xFFFF, p.off-4, b[:2])
	}
	switch e.vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		if b, err = p.bytes(4); err != nil {
			return e, err
		}
		e.length = s.bo.Uint32(b)
	default:
		e.length = uint32(s.bo.Uint16(b[2:]))
	}
	return e, nil
}

// vrName returns the two letters of a VR, or "" when they are not letters.
func vrName(a, b byte) string {
	if a < 'A' || a > 'Z' || b < 'A' || b > 'Z' {
		return ""
	}
	return string([]byte{a, b})
}

// topLevel walks the meta group and the data set to the end of the file.
func (p *dicomParser) topLevel(h *dicomHeader) error {
	s := metaSyntax
	inMeta := true
	// An image (it has Rows) whose file ends before any pixel data was most
	// likely cut at an element boundary while being copied.
	var hasRows, hasPixels bool
	for p.off < p.size {
		if inMeta {
			// The meta group is always explicit little endian; the data set
			// switches to the transfer syntax at its first element.
			b, err := p.bytes(2)
			if err != nil {
				return err
			}
			p.off -= 2
			if binary.LittleEndian.Uint16(b) != 0x0002 {
				inMeta = false
				switch h.TransferSyntax {
				case tsImplicitLE:
					s = syntax{explicit: false, bo: binary.LittleEndian}
				case tsExplicitBE:
					s = syntax{explicit: true, bo: binary.BigEndian}
				case tsDeflated:
					// The rest is a deflate stream: nothing to follow by offset.
					// It is taken as complete, its UIDs as unreadable (so it
					// is an image of its own); the server judges it.
					h.UIDsKnown = true
					return nil
				}
			}
		}
		start := p.off
		e, err := p.readElement(s)
		if err != nil {
			return err
		}
		if !inMeta && e.tag > tagSeriesUID {
			h.UIDsKnown = true
		}
		switch e.tag {
		case tagRows:
			hasRows = true
		case tagFloatPixelData, tagDoublePixelData, tagPixelData:
			hasPixels = true
		}
		if e.tag>>16 == 0xFFFE {
			return fmt.Errorf("item tag (%04X,%04X) at top level, offset %d", e.tag>>16, e.tag&0xFFFF, start)
		}
		if e.length == undefinedLength {
			if err := p.undefinedValue(e, s, 0); err != nil {
				return err
			}
			continue
		}
		var dst *string
		switch e.tag {
		case tagTransferSyntax:
			dst = &h.TransferSyntax
		case tagMetaSOPClass:
			if h.SOPClass == "" {
				dst = &h.SOPClass
			}
		case tagSOPClass:
			dst = &h.SOPClass
		case tagStudyUID:
			dst = &h.Study
		case tagSeriesUID:
			dst = &h.Series
		}
		if dst != nil && e.length <= maxValueRead {
			b, err := p.bytes(int(e.length))
			if err != nil {
				return err
			}
			*dst = strings.TrimRight(string(b), "\x00 ")
			continue
		}
		if err := p.skip(int64(e.length)); err != nil {
			return err
		}
	}
	h.UIDsKnown = true
	if hasRows && !hasPixels {
		return fmt.Errorf("no pixel data after the header: %w", errDICOMIncomplete)
	}
	return nil
}

// undefinedValue follows an undefined-length value: a sequence (its items
// until the sequence delimiter) or encapsulated pixel data (fragments).
func (p *dicomParser) undefinedValue(e element, s syntax, depth int) error {
	if depth >= maxDICOMDepth {
		return fmt.Errorf("sequences nested deeper than %d at offset %d", maxDICOMDepth, p.off)
	}
	switch {
	case e.tag == tagPixelData, e.vr == "SQ", e.vr == "", e.vr == "UN":
	default:
		return fmt.Errorf("element (%04X,%04X) VR %s has undefined length", e.tag>>16, e.tag&0xFFFF, e.vr)
	}
	inner := s
	if e.vr == "UN" {
		// An undefined-length UN holds an implicit VR little endian sequence.
		inner = syntax{explicit: false, bo: binary.LittleEndian}
	}
	for {
		it, err := p.readElement(syntax{explicit: false, bo: inner.bo})
		if err != nil {
			return err
		}
		switch it.tag {
		case tagSequenceDelimiter:
			return nil
		case tagItem:
		default:
			return fmt.Errorf("expected an item at offset %d, found (%04X,%04X)", p.off-8, it.tag>>16, it.tag&0xFFFF)
		}
		if it.length != undefinedLength {
			if err := p.skip(int64(it.length)); err != nil {
				return err
			}
			continue
		}
		if e.tag == tagPixelData {
			return fmt.Errorf("pixel data fragment of undefined length at offset %d", p.off-8)
		}
		if err := p.item(inner, depth+1); err != nil {
			return err
		}
	}
}

// item walks the elements of an undefined-length item up to its delimiter.
func (p *dicomParser) item(s syntax, depth int) error {
	for {
		e, err := p.readElement(s)
		if err != nil {
			return err
		}
		if e.tag == tagItemDelimiter {
			return nil
		}
		if e.tag>>16 == 0xFFFE {
			return fmt.Errorf("unexpected (%04X,%04X) inside an item at offset %d", e.tag>>16, e.tag&0xFFFF, p.off-8)
		}
		if e.length == undefinedLength {
			if err := p.undefinedValue(e, s, depth); err != nil {
				return err
			}
			continue
		}
		if err := p.skip(int64(e.length)); err != nil {
			return err
		}
	}
}
