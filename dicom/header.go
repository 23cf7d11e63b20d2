package dicom

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Header holds what grouping DICOM files as the server does needs from one
// file, read from its header without the pixel data.
type Header struct {
	// TransferSyntaxUID and MediaStorageSOPClassUID come from the meta group.
	TransferSyntaxUID       string
	MediaStorageSOPClassUID string

	// The rest come from the data set. SOPClassUID is the data set's
	// (0008,0016), which is what panimg groups by.
	SOPClassUID       string
	StudyInstanceUID  string
	SeriesInstanceUID string
	SeriesNumber      string
	SeriesDescription string
	InstanceNumber    string
	// NumberOfFrames is 0 when the file does not say (a single frame).
	NumberOfFrames     int
	BurnedInAnnotation string

	// StackID (0020,9056) and TemporalPositionIndex (0020,9128) are taken
	// from the top level of the data set or, when absent there, from the
	// FrameContentSequence (0020,9111) in the first item of the shared or
	// else the per-frame functional groups of an enhanced multi-frame file.
	// HasStackID says a StackID was found at all (it may be empty);
	// StackIDTopLevel says it was found at the top level, the only place
	// panimg looks (see GroupKey).
	StackID               string
	HasStackID            bool
	StackIDTopLevel       bool
	TemporalPositionIndex int
	HasTemporalPosition   bool

	// PixelDataOffset is the offset of the pixel data element in the file
	// (of the inflated data set for the deflated transfer syntax), or -1
	// when the header ended without pixel data.
	PixelDataOffset int64
}

// GroupKey is the key panimg groups files into images by
// (panimg/image_builders/dicom.py, get_dicom_headers_by_study):
// StudyInstanceUID, StackID when the data set has one at its top level
// (even empty) else SeriesInstanceUID, and SOPClassUID.
func (h Header) GroupKey() (study, stackOrSeries, sopClass string) {
	stack := h.SeriesInstanceUID
	if h.StackIDTopLevel {
		stack = h.StackID
	}
	return h.StudyInstanceUID, stack, h.SOPClassUID
}

// CheckGroupKey returns an error naming the first attribute of the group
// key the data set lacks; panimg cannot read such a file ("could not parse
// headers"). It needs SeriesInstanceUID even when there is a StackID.
func (h Header) CheckGroupKey() error {
	switch {
	case h.StudyInstanceUID == "":
		return fmt.Errorf("dicom file has no StudyInstanceUID %s", tagStudyUID)
	case h.SeriesInstanceUID == "":
		return fmt.Errorf("dicom file has no SeriesInstanceUID %s", tagSeriesUID)
	case h.SOPClassUID == "":
		return fmt.Errorf("dicom file has no SOPClassUID %s", tagSOPClass)
	}
	return nil
}

// BurnedIn reports whether BurnedInAnnotation is YES: the file shows
// identifying text in its pixels, which no header rewrite removes.
func (h Header) BurnedIn() bool {
	return strings.EqualFold(h.BurnedInAnnotation, "YES")
}

// ReadHeader reads a DICOM Part-10 file from r up to its pixel data (or its
// end when it has none) and returns the attributes in Header. A file that
// ends early is an error matching ErrTruncated that names what was cut; a
// file that is not DICOM it can follow is a *FormatError. It never holds
// more than a few buffers in memory, whatever the file declares.
func ReadHeader(r io.Reader) (Header, error) {
	h, _, err := readHeader(r)
	return h, err
}

// Verify reads the whole file: ReadHeader, then the pixel data and any
// element after it, so that a file cut anywhere is an error matching
// ErrTruncated. Pixel data is skipped, by seeking when r is an io.Seeker
// positioned at the start of the file (an *os.File, an *io.SectionReader),
// else by reading. An image (it has Rows) without pixel data is taken as
// cut after its header.
func Verify(r io.Reader) (Header, error) {
	h, hr, err := readHeader(r)
	if err != nil {
		return h, err
	}
	if h.PixelDataOffset >= 0 {
		in, s := hr.in, hr.s
		if err := in.skipValue(hr.pixel, s, 0); err != nil {
			return h, err
		}
		for {
			e, err := in.readElement(s)
			if err == io.EOF {
				break
			}
			if err != nil {
				return h, err
			}
			if e.tag.Group() == 0xFFFE {
				return h, &FormatError{Offset: in.off - 8, Msg: fmt.Sprintf("item tag %s at top level", e.tag)}
			}
			if err := in.skipValue(e, s, 0); err != nil {
				return h, err
			}
		}
	} else if hr.hasRows {
		return h, &TruncatedError{What: "pixel data (the file ends after the image header)", Offset: hr.in.off}
	}
	if hr.closeFlate != nil {
		if err := hr.closeFlate(); err != nil {
			return h, err
		}
	}
	return h, nil
}

// headerReader is the state ReadHeader leaves for Verify.
type headerReader struct {
	in         *input
	s          syntax
	pixel      element
	hasRows    bool
	closeFlate func() error
}

func readHeader(r io.Reader) (Header, *headerReader, error) {
	h := Header{PixelDataOffset: -1}
	in := newInput(r)
	hr := &headerReader{in: in}
	if err := in.readPrefix(); err != nil {
		return h, hr, err
	}
	meta, err := readMeta(in)
	if err != nil {
		return h, hr, err
	}
	h.TransferSyntaxUID = meta.get(tagTransferSyntax)
	h.MediaStorageSOPClassUID = meta.get(tagMediaSOPClass)
	s, deflated := syntaxOf(h.TransferSyntaxUID)
	hr.s = s
	if deflated {
		fr := flate.NewReader(in.br)
		hr.closeFlate = fr.Close
		in = newInput(fr)
		hr.in = in
	}
	var haveStack, haveTemporal bool
	for {
		start := in.off
		e, err := in.readElement(s)
		if err == io.EOF {
			break
		}
		if err != nil {
			return h, hr, err
		}
		if e.tag.Group() == 0xFFFE {
			return h, hr, &FormatError{Offset: start, Msg: fmt.Sprintf("item tag %s at top level", e.tag)}
		}
		if e.tag == tagPixelData || e.tag == tagFloatPixelData || e.tag == tagDoublePixelData {
			h.PixelDataOffset = start
			hr.pixel = e
			break
		}
		if e.tag == tagRows {
			hr.hasRows = true
		}
		var dst *string
		switch e.tag {
		case tagSOPClass:
			dst = &h.SOPClassUID
		case tagStudyUID:
			dst = &h.StudyInstanceUID
		case tagSeriesUID:
			dst = &h.SeriesInstanceUID
		case tagSeriesNumber:
			dst = &h.SeriesNumber
		case tagSeriesDescription:
			dst = &h.SeriesDescription
		case tagInstanceNumber:
			dst = &h.InstanceNumber
		case tagBurnedInAnnotation:
			dst = &h.BurnedInAnnotation
		case tagNumberOfFrames, tagStackID, tagTemporalPosIndex:
			var v string
			dst = &v
		}
		if dst != nil && !e.undefinedLength() && e.length <= maxValue {
			b, err := in.value(e.length, e.tag)
			if err != nil {
				return h, hr, err
			}
			switch e.tag {
			case tagNumberOfFrames:
				h.NumberOfFrames, _ = strconv.Atoi(trimText(b))
			case tagStackID:
				h.StackID, h.HasStackID, h.StackIDTopLevel, haveStack = trimText(b), true, true, true
			case tagTemporalPosIndex:
				h.TemporalPositionIndex, h.HasTemporalPosition, haveTemporal = int(uintValue(b, e, s)), true, true
			default:
				*dst = trimText(b)
			}
			continue
		}
		if (e.tag == tagSharedFGSeq || e.tag == tagPerFrameFGSeq) && in.isSequence(e, s) {
			fc, err := readFirstFrameContent(in, e, s)
			if err != nil {
				return h, hr, err
			}
			if fc.hasStack && !haveStack {
				h.StackID, h.HasStackID, haveStack = fc.stack, true, true
			}
			if fc.hasTemporal && !haveTemporal {
				h.TemporalPositionIndex, h.HasTemporalPosition, haveTemporal = fc.temporal, true, true
			}
			continue
		}
		if err := in.skipValue(e, s, 0); err != nil {
			return h, hr, err
		}
	}
	return h, hr, nil
}

// trimText drops the padding of a text or UID value.
func trimText(b []byte) string {
	return strings.Trim(string(b), "\x00 ")
}

// uintValue reads an unsigned binary value (UL, US) or, in implicit VR
// where the VR may be unknown, falls back to a decimal string.
func uintValue(b []byte, e element, s syntax) uint64 {
	o := s.order()
	switch {
	case len(b) == 4 && (e.vr == "UL" || e.vr == ""):
		return uint64(o.Uint32(b))
	case len(b) == 2 && (e.vr == "US" || e.vr == ""):
		return uint64(o.Uint16(b))
	}
	v, _ := strconv.ParseUint(trimText(b), 10, 32)
	return v
}

// frameContent is what the header reads from a functional group sequence.
type frameContent struct {
	stack       string
	hasStack    bool
	temporal    int
	hasTemporal bool
}

// readFirstFrameContent reads the functional group sequence fg, looking in
// its first item for FrameContentSequence and in that sequence's first item
// for StackID and TemporalPositionIndex; everything else is skipped.
func readFirstFrameContent(in *input, fg element, s syntax) (frameContent, error) {
	var fc frameContent
	first := true
	err := walkItems(in, fg, s, 1, func(is syntax, end int64) error {
		if !first {
			return nil
		}
		first = false
		return walkElements(in, is, end, 1, fg.tag, func(e element) (bool, error) {
			if e.tag != tagFrameContentSeq || !in.isSequence(e, is) {
				return false, nil
			}
			firstFC := true
			return true, walkItems(in, e, is, 2, func(fs syntax, fend int64) error {
				if !firstFC {
					return nil
				}
				firstFC = false
				return walkElements(in, fs, fend, 2, e.tag, func(v element) (bool, error) {
					if v.undefinedLength() || v.length > maxValue {
						return false, nil
					}
					switch v.tag {
					case tagStackID:
						b, err := in.value(v.length, v.tag)
						fc.stack, fc.hasStack = trimText(b), true
						return true, err
					case tagTemporalPosIndex:
						b, err := in.value(v.length, v.tag)
						fc.temporal, fc.hasTemporal = int(uintValue(b, v, fs)), true
						return true, err
					}
					return false, nil
				})
			})
		})
	})
	return fc, err
}

// walkItems calls item for each item of sequence seq with the item's syntax
// and its end offset (-1: undefined length, ends at its delimiter). item must
// consume the item's elements when it returns nil having read them, or leave
// them for walkItems to skip by returning without reading (a skipped item is
// detected by the offset not having moved).
func walkItems(in *input, seq element, s syntax, depth int, item func(s syntax, end int64) error) error {
	if depth >= maxDepth {
		return &FormatError{Offset: in.off, Msg: fmt.Sprintf("sequences nested deeper than %d", maxDepth)}
	}
	inner := innerSyntax(seq, s)
	seqEnd := int64(-1)
	if !seq.undefinedLength() {
		seqEnd = in.off + int64(seq.length)
	}
	for {
		if seqEnd >= 0 && in.off >= seqEnd {
			if in.off > seqEnd {
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("item overruns sequence %s", seq.tag)}
			}
			return nil
		}
		it, err := in.readItemHeader(seq, inner)
		if err != nil {
			return err
		}
		if it.tag == tagSeqDelim {
			if seqEnd >= 0 {
				return &FormatError{Offset: in.off - 8, Msg: fmt.Sprintf("sequence delimiter in defined-length sequence %s", seq.tag)}
			}
			return nil
		}
		end := int64(-1)
		if !it.undefinedLength() {
			end = in.off + int64(it.length)
		}
		start := in.off
		if err := item(inner, end); err != nil {
			return err
		}
		if in.off == start {
			// Not read: skip it.
			if end >= 0 {
				if err := in.skip(end-in.off, func() string { return "item of " + seq.tag.String() }); err != nil {
					return err
				}
			} else if err := in.skipItem(inner, depth+1, seq.tag); err != nil {
				return err
			}
		}
	}
}

// walkElements reads the elements of an item ending at end (-1: at its
// delimiter, which it consumes), calling f for each; f returns true when it
// consumed the value, else the value is skipped.
func walkElements(in *input, s syntax, end int64, depth int, seq Tag, f func(element) (bool, error)) error {
	for {
		if end >= 0 && in.off >= end {
			if in.off > end {
				return &FormatError{Offset: in.off, Msg: fmt.Sprintf("element overruns item of %s", seq)}
			}
			return nil
		}
		start := in.off
		e, err := in.readElement(s)
		if err == io.EOF {
			return &TruncatedError{What: "item of " + seq.String(), Offset: start}
		}
		if err != nil {
			return err
		}
		if e.tag == tagItemDelim {
			if end >= 0 {
				return &FormatError{Offset: start, Msg: fmt.Sprintf("item delimiter in defined-length item of %s", seq)}
			}
			return nil
		}
		if e.tag.Group() == 0xFFFE {
			return &FormatError{Offset: start, Msg: fmt.Sprintf("unexpected %s inside an item of %s", e.tag, seq)}
		}
		done, err := f(e)
		if err != nil {
			return err
		}
		if !done {
			if err := in.skipValue(e, s, depth); err != nil {
				return err
			}
		}
	}
}

// metaGroup is the file meta information (group 0002), read whole: it is
// small and the rewriter writes it anew.
type metaGroup struct {
	elems []metaElem
}

type metaElem struct {
	tag   Tag
	vr    string
	value []byte
}

func (m metaGroup) get(t Tag) string {
	for _, e := range m.elems {
		if e.tag == t {
			return trimText(e.value)
		}
	}
	return ""
}

func (m metaGroup) raw(t Tag) ([]byte, bool) {
	for _, e := range m.elems {
		if e.tag == t {
			return e.value, true
		}
	}
	return nil, false
}

// readMeta reads group 0002, always explicit VR little endian. Its extent
// is its group length (0002,0000) when present, else up to the first element
// of another group.
func readMeta(in *input) (metaGroup, error) {
	var m metaGroup
	end := int64(-1)
	total := 0
	for {
		if end >= 0 && in.off >= end {
			break
		}
		if end < 0 {
			b, err := in.br.Peek(2)
			if err != nil && len(b) < 2 {
				if errors.Is(err, io.EOF) {
					return m, in.truncated("meta group")
				}
				return m, fmt.Errorf("read at offset %d: %w", in.off, err)
			}
			if explicitLE.order().Uint16(b) != 0x0002 {
				break
			}
		}
		start := in.off
		e, err := in.readElement(explicitLE)
		if err == io.EOF {
			return m, &TruncatedError{What: "meta group", Offset: start}
		}
		if err != nil {
			return m, err
		}
		if e.tag.Group() != 0x0002 {
			return m, &FormatError{Offset: start, Msg: fmt.Sprintf("element %s inside the meta group", e.tag)}
		}
		total += int(min(e.length, maxMetaLen+1))
		if e.undefinedLength() || total > maxMetaLen {
			return m, &FormatError{Offset: start, Msg: "meta group too long"}
		}
		v := make([]byte, e.length)
		if err := in.full(v, func() string { return "value of " + e.tag.String() }); err != nil {
			return m, err
		}
		if e.tag == tagMetaGroupLength {
			if len(v) != 4 || len(m.elems) > 0 {
				return m, &FormatError{Offset: start, Msg: "invalid meta group length"}
			}
			end = in.off + int64(explicitLE.order().Uint32(v))
			continue
		}
		m.elems = append(m.elems, metaElem{tag: e.tag, vr: e.vr, value: v})
	}
	if end >= 0 && in.off != end {
		return m, &FormatError{Offset: in.off, Msg: "meta group length does not end at an element boundary"}
	}
	ts := m.get(tagTransferSyntax)
	if ts == "" {
		return m, &FormatError{Offset: in.off, Msg: "meta group has no transfer syntax (0002,0010)"}
	}
	if bytes.ContainsAny([]byte(ts), " \\") {
		return m, &FormatError{Offset: in.off, Msg: fmt.Sprintf("invalid transfer syntax %q", ts)}
	}
	return m, nil
}

// topUIDs is what Rewrite reads ahead of rewriting: the data set's
// top-level SOPInstanceUID and SeriesInstanceUID, "" when absent or not
// reached.
type topUIDs struct {
	sopInstance, series string
}

// readTopUIDs reads r's top level up to SeriesInstanceUID (0020,000E). An
// error only ends the reading: rewriting the file meets it again, and says
// it.
func readTopUIDs(r io.Reader) topUIDs {
	var top topUIDs
	in := newInput(r)
	if in.readPrefix() != nil {
		return top
	}
	meta, err := readMeta(in)
	if err != nil {
		return top
	}
	s, deflated := syntaxOf(meta.get(tagTransferSyntax))
	if deflated {
		in = newInput(flate.NewReader(in.br))
	}
	for {
		e, err := in.readElement(s)
		if err != nil || e.tag > tagSeriesUID || e.tag.Group() == 0xFFFE {
			return top
		}
		if (e.tag == tagSOPInstance || e.tag == tagSeriesUID) && !e.undefinedLength() && e.length <= maxValue {
			b, err := in.value(e.length, e.tag)
			if err != nil {
				return top
			}
			if e.tag == tagSOPInstance {
				top.sopInstance = trimText(b)
			} else {
				top.series = trimText(b)
			}
			continue
		}
		if err := in.skipValue(e, s, 0); err != nil {
			return top
		}
	}
}
