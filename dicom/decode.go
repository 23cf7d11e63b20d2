package dicom

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

const (
	preambleLen = 128
	prefixLen   = 132 // preamble + "DICM"
	undefined   = 0xFFFFFFFF
	// maxValue is the longest value read into memory; longer values are
	// copied or skipped as a stream. UIDs are at most 64 bytes, the texts
	// the reader looks at far less.
	maxValue = 4096
	// maxDepth bounds sequence nesting; deeper is treated as a broken file.
	// Real data nests a few levels (SR content trees a few dozen); each
	// level costs a few hundred bytes of stack and no heap, so the bound
	// only stops an adversarial file from recursing without end.
	maxDepth = 256
	// maxMetaLen bounds the meta group (group 0002), which is read whole.
	maxMetaLen = 64 << 10
	bufSize    = 64 << 10
)

// ErrTruncated is matched (errors.Is) by every error that says the input
// ended inside the file: inside an element, a sequence, an item, or before
// the pixel data an image must have.
var ErrTruncated = errors.New("dicom file truncated")

// TruncatedError says where the input ended: in What (e.g. "value of
// (0010,0010)") at byte Offset of the file (of the inflated data set for the
// deflated transfer syntax).
type TruncatedError struct {
	What   string
	Offset int64
}

// Error says what was cut and where.
func (e *TruncatedError) Error() string {
	return fmt.Sprintf("dicom file truncated in %s at offset %d", e.What, e.Offset)
}

// Is makes errors.Is(err, ErrTruncated) true.
func (e *TruncatedError) Is(target error) bool { return target == ErrTruncated }

// FormatError is a file that is not DICOM this package can follow: no DICM
// magic, an invalid VR, a sequence that does not nest, an element that
// overruns its item.
type FormatError struct {
	Offset int64
	Msg    string
}

// Error says what is wrong and where.
func (e *FormatError) Error() string {
	return fmt.Sprintf("not a readable dicom file: %s at offset %d", e.Msg, e.Offset)
}

// syntax is how a data set is encoded.
type syntax struct {
	implicit bool
	big      bool
}

// byteOrder reads and appends.
type byteOrder interface {
	binary.ByteOrder
	binary.AppendByteOrder
}

func (s syntax) order() byteOrder {
	if s.big {
		return binary.BigEndian
	}
	return binary.LittleEndian
}

var (
	explicitLE = syntax{}
	implicitLE = syntax{implicit: true}
)

// syntaxOf returns the data set encoding of a transfer syntax and whether
// the data set is deflated.
func syntaxOf(ts string) (s syntax, deflated bool) {
	switch ts {
	case TSImplicitLE:
		return implicitLE, false
	case TSExplicitBE:
		return syntax{big: true}, false
	case TSDeflatedLE:
		return explicitLE, true
	}
	return explicitLE, false
}

// input reads a DICOM stream and counts its offset. It never allocates more
// than its buffers, whatever length the file declares.
type input struct {
	br      *bufio.Reader
	src     io.Reader
	off     int64
	scratch [maxValue]byte
}

func newInput(r io.Reader) *input {
	return &input{br: bufio.NewReaderSize(r, bufSize), src: r}
}

func (in *input) truncated(what string) error {
	return &TruncatedError{What: what, Offset: in.off}
}

// full reads exactly len(p) bytes; a short read is a TruncatedError naming
// what was being read.
func (in *input) full(p []byte, what func() string) error {
	n, err := io.ReadFull(in.br, p)
	in.off += int64(n)
	if err != nil {
		if isEOF(err) {
			return in.truncated(what())
		}
		return fmt.Errorf("read at offset %d: %w", in.off, err)
	}
	return nil
}

// value reads a value of n ≤ maxValue bytes into the scratch buffer; the
// slice is valid until the next call.
func (in *input) value(n uint32, t Tag) ([]byte, error) {
	if n > maxValue {
		return nil, &FormatError{Offset: in.off, Msg: fmt.Sprintf("value of %s is %d bytes, more than the %d this reader takes", t, n, maxValue)}
	}
	b := in.scratch[:n]
	return b, in.full(b, func() string { return "value of " + t.String() })
}

// skip advances over n bytes, all of which must be present.
func (in *input) skip(n int64, what func() string) error {
	got, err := in.br.Discard(int(min(n, int64(in.br.Buffered()))))
	in.off += int64(got)
	n -= int64(got)
	if err != nil {
		return fmt.Errorf("read at offset %d: %w", in.off, err)
	}
	if n == 0 {
		return nil
	}
	if sk, ok := in.src.(io.Seeker); ok {
		// Skip pixel data by seeking, but only as far as the file goes:
		// a seek past the end succeeds and would hide a truncation.
		cur, err := sk.Seek(0, io.SeekCurrent)
		if err == nil {
			var end int64
			if end, err = sk.Seek(0, io.SeekEnd); err == nil {
				target := min(cur+n, end)
				if _, err = sk.Seek(target, io.SeekStart); err == nil {
					in.br.Reset(in.src)
					in.off += target - cur
					if target < cur+n {
						return in.truncated(what())
					}
					return nil
				}
			}
		}
		return fmt.Errorf("seek at offset %d: %w", in.off, err)
	}
	m, err := io.CopyN(io.Discard, in.br, n)
	in.off += m
	if err != nil {
		if isEOF(err) {
			return in.truncated(what())
		}
		return fmt.Errorf("read at offset %d: %w", in.off, err)
	}
	return nil
}

// copyTo copies n bytes to w as a stream. It hands w the reader's own
// buffer (Peek, then Discard), which a bufio.Writer with an empty buffer
// passes straight through: one copy fewer than io.CopyN for pixel data.
func (in *input) copyTo(w io.Writer, n int64, what func() string) error {
	for n > 0 {
		b, err := in.br.Peek(int(min(n, int64(in.br.Size()))))
		if len(b) > 0 {
			if _, werr := w.Write(b); werr != nil {
				return werr
			}
			in.br.Discard(len(b))
			in.off += int64(len(b))
			n -= int64(len(b))
		}
		if err != nil && n > 0 {
			if isEOF(err) {
				return in.truncated(what())
			}
			return fmt.Errorf("read at offset %d: %w", in.off, err)
		}
	}
	return nil
}

// peekItem reports whether the next 4 bytes are an item tag in s: how an
// implicit VR sequence of a private attribute, whose VR no dictionary
// gives, is recognised.
func (in *input) peekItem(s syntax) bool {
	b, err := in.br.Peek(4)
	if err != nil {
		return false
	}
	o := s.order()
	return Tag(uint32(o.Uint16(b))<<16|uint32(o.Uint16(b[2:]))) == tagItem
}

// element is one element header.
type element struct {
	tag    Tag
	vr     string // "" in implicit VR and for items and delimiters
	length uint32
}

// undefinedLength reports whether e's length is the undefined marker.
func (e element) undefinedLength() bool { return e.length == undefined }

// readPrefix reads the 128-byte preamble and the DICM magic.
func (in *input) readPrefix() error {
	var b [prefixLen]byte
	n, err := io.ReadFull(in.br, b[:])
	in.off += int64(n)
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			if n < prefixLen {
				return &FormatError{Offset: 0, Msg: fmt.Sprintf("only %d bytes, no DICM magic at offset 128", n)}
			}
		}
		return fmt.Errorf("read preamble: %w", err)
	}
	if string(b[preambleLen:]) != "DICM" {
		return &FormatError{Offset: preambleLen, Msg: "no DICM magic"}
	}
	return nil
}

// readElement reads one element header in syntax s. At a clean end of
// input it returns io.EOF.
func (in *input) readElement(s syntax) (element, error) {
	start := in.off
	var hdr [8]byte
	n, err := io.ReadFull(in.br, hdr[:4])
	in.off += int64(n)
	if err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return element{}, io.EOF
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return element{}, &TruncatedError{What: "element header", Offset: start}
		}
		return element{}, fmt.Errorf("read at offset %d: %w", in.off, err)
	}
	o := s.order()
	e := element{tag: Tag(uint32(o.Uint16(hdr[:]))<<16 | uint32(o.Uint16(hdr[2:])))}
	what := func() string { return "header of element " + e.tag.String() }
	if err := in.full(hdr[4:8], what); err != nil {
		return e, err
	}
	if e.tag.Group() == 0xFFFE || s.implicit {
		// Items and delimiters have no VR in any syntax.
		e.length = o.Uint32(hdr[4:])
		return e, nil
	}
	e.vr = string(hdr[4:6])
	if !validVR(e.vr) {
		return e, &FormatError{Offset: start, Msg: fmt.Sprintf("element %s has invalid VR %q", e.tag, hdr[4:6])}
	}
	if !longVR(e.vr) {
		e.length = uint32(o.Uint16(hdr[6:]))
		return e, nil
	}
	if err := in.full(hdr[:4], what); err != nil {
		return e, err
	}
	e.length = o.Uint32(hdr[:4])
	return e, nil
}

// isSequence reports whether e (just read, its value next) holds items.
func (in *input) isSequence(e element, s syntax) bool {
	switch {
	case e.tag == tagPixelData || e.tag == tagFloatPixelData || e.tag == tagDoublePixelData:
		return false
	case e.vr == "SQ":
		return true
	case e.vr == "UN" && !e.undefinedLength():
		// A UN of defined length may hold an implicit VR sequence too.
		switch dictVR(e.tag) {
		case "SQ":
			return true
		case "":
			return e.length >= 8 && in.peekItem(implicitLE)
		}
		return false
	case e.undefinedLength():
		// Only sequences, UN holding a sequence, and encapsulated pixel
		// data may have an undefined length.
		return e.vr == "" || e.vr == "UN"
	case e.vr != "":
		return false
	}
	switch dictVR(e.tag) {
	case "SQ":
		return true
	case "":
	default:
		return false
	}
	return e.length >= 8 && in.peekItem(s)
}

// innerSyntax is the syntax of the items of sequence element e.
func innerSyntax(e element, s syntax) syntax {
	if e.vr == "UN" {
		// A UN sequence is encoded in implicit VR little endian (PS3.5 6.2.2).
		return implicitLE
	}
	return s
}

// skipValue skips e's value, walking sequences and fragments of
// undefined length.
func (in *input) skipValue(e element, s syntax, depth int) error {
	if !e.undefinedLength() {
		return in.skip(int64(e.length), func() string { return "value of " + e.tag.String() })
	}
	if depth >= maxDepth {
		return &FormatError{Offset: in.off, Msg: fmt.Sprintf("sequences nested deeper than %d", maxDepth)}
	}
	if e.tag != tagPixelData && !in.isSequence(e, s) {
		return &FormatError{Offset: in.off, Msg: fmt.Sprintf("element %s VR %s has undefined length", e.tag, e.vr)}
	}
	inner := innerSyntax(e, s)
	for {
		it, err := in.readItemHeader(e, inner)
		if err != nil {
			return err
		}
		if it.tag == tagSeqDelim {
			return nil
		}
		if !it.undefinedLength() {
			if err := in.skip(int64(it.length), func() string { return "item of " + e.tag.String() }); err != nil {
				return err
			}
			continue
		}
		if e.tag == tagPixelData {
			return &FormatError{Offset: in.off, Msg: "pixel data fragment of undefined length"}
		}
		if err := in.skipItem(inner, depth+1, e.tag); err != nil {
			return err
		}
	}
}

// readItemHeader reads the header of the next item of sequence (or
// fragments) seq, or its delimiter.
func (in *input) readItemHeader(seq element, s syntax) (element, error) {
	start := in.off
	it, err := in.readElement(syntax{implicit: true, big: s.big})
	if err == io.EOF {
		return it, &TruncatedError{What: "sequence " + seq.tag.String(), Offset: start}
	}
	if err != nil {
		return it, err
	}
	if it.tag != tagItem && it.tag != tagSeqDelim {
		return it, &FormatError{Offset: start, Msg: fmt.Sprintf("expected an item of %s, found %s", seq.tag, it.tag)}
	}
	return it, nil
}

// skipItem skips the elements of an undefined-length item up to and
// including its delimiter.
func (in *input) skipItem(s syntax, depth int, seq Tag) error {
	return walkElements(in, s, -1, depth, seq, func(element) (bool, error) { return false, nil })
}

// isEOF reports whether err says the input ended (a cut deflate stream
// says io.ErrUnexpectedEOF).
func isEOF(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// validVR reports whether vr is one of the VRs of PS3.5 6.2.
func validVR(vr string) bool {
	switch vr {
	case "AE", "AS", "AT", "CS", "DA", "DS", "DT", "FD", "FL", "IS", "LO", "LT",
		"OB", "OD", "OF", "OL", "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST",
		"SV", "TM", "UC", "UI", "UL", "UN", "UR", "US", "UT", "UV":
		return true
	}
	return false
}
