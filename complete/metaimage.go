package complete

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MetaImageHeader is what a MetaImage (.mha, .mhd) header says about where
// its element data is and how many bytes it takes. MetaIO reads the data at
// HeaderSize from the start of the file that holds it when HeaderSize > 0
// (the .mha itself, or the data file), right after the header for LOCAL data
// otherwise, and as the last DataSize bytes of the file when HeaderSize is -1.
type MetaImageHeader struct {
	// End is the offset just past the ElementDataFile line: where LOCAL data
	// starts.
	End int64
	// DataFile is ElementDataFile's value as written: LOCAL, a file name, a
	// LIST or a file-name pattern.
	DataFile   string
	HeaderSize int64 // HeaderSize: 0, bytes to skip, or -1 (the data ends the file)
	Compressed bool  // CompressedData = True
	// DataSize is how many bytes the element data takes as stored (the
	// CompressedDataSize when compressed), or -1 when the header does not
	// tell (ASCII data, an unknown element type, compressed data without
	// CompressedDataSize, an absurd size).
	DataSize int64
}

// Local reports whether the data follows the header in the same file.
func (h *MetaImageHeader) Local() bool { return strings.EqualFold(h.DataFile, "LOCAL") }

// The same limits the server applies (panimg parse_mh_header) on lines, and
// a cap on a line's length that MetaIO's own writers never reach.
const (
	maxMetaLines    = 10000
	maxMetaLineSize = 64 << 10
)

// metaFields are the MetaIO field names; a header must start with one of
// them (MetaIO's writers always do), which tells a header still being
// written from a file that is not MetaIO at all.
var metaFields = []string{
	"Comment", "AcquisitionDate", "FormTypeName", "ObjectType", "ObjectSubType", "TransformType",
	"NDims", "Name", "ID", "ParentID", "CompressedData", "CompressedDataSize", "BinaryData",
	"BinaryDataByteOrderMSB", "ElementByteOrderMSB", "Color", "Position", "Offset", "Origin",
	"Orientation", "Rotation", "TransformMatrix", "CenterOfRotation", "AnatomicalOrientation",
	"ElementSpacing", "DimSize", "HeaderSize", "HeaderSizePerSlice", "Modality", "ImagePosition",
	"SequenceID", "ElementMin", "ElementMax", "ElementNumberOfChannels", "ElementSize",
	"ElementNBits", "ElementToIntensityFunctionSlope", "ElementToIntensityFunctionOffset",
	"ElementType", "ElementDataFile", "FileFormatVersion", "DistanceUnits",
}

func isMetaFieldPrefix(s string, whole bool) bool {
	for _, f := range metaFields {
		if whole && strings.EqualFold(s, f) || !whole && len(s) <= len(f) && strings.EqualFold(s, f[:len(s)]) {
			return true
		}
	}
	return false
}

// metaElementSize returns the bytes per element of a MetaIO element type
// (MetaIO's MET_ValueTypeSize; its longs are 32 bits), or -1.
func metaElementSize(t string) int64 {
	t = strings.TrimSuffix(strings.ToUpper(t), "_ARRAY")
	switch t {
	case "MET_ASCII_CHAR", "MET_CHAR", "MET_UCHAR", "MET_STRING":
		return 1
	case "MET_SHORT", "MET_USHORT":
		return 2
	case "MET_INT", "MET_UINT", "MET_LONG", "MET_ULONG", "MET_FLOAT", "MET_FLOAT_MATRIX":
		return 4
	case "MET_LONG_LONG", "MET_ULONG_LONG", "MET_DOUBLE":
		return 8
	}
	return -1
}

// ParseMetaImage reads a MetaImage header from r up to and including its
// ElementDataFile line (by MetaIO's rule the last). A header that ends
// before that line is complete gives *IncompleteError (Want -1, Have the
// bytes read); text that is not a MetaIO header gives an error wrapping
// ErrNoProof.
func ParseMetaImage(r io.Reader) (*MetaImageHeader, error) {
	h := &MetaImageHeader{DataSize: -1}
	br := bufio.NewReaderSize(r, headerReadSize)
	var (
		dims     []int64
		ndims    int64 = -1
		elemSize int64 = -1
		channels int64 = 1
		compSize int64 = -1
		binary         = true
		off      int64
		lines    int
	)
	for {
		line, err := readLine(br, maxMetaLineSize)
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("header line longer than %d bytes: %w", maxMetaLineSize, ErrNoProof)
		}
		if bytes.IndexByte(line, 0) >= 0 {
			return nil, fmt.Errorf("binary bytes in the header: %w", ErrNoProof)
		}
		complete := err == nil
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("read header: %w", err)
		}
		off += int64(len(line))
		key, value, hasEq := strings.Cut(string(line), "=")
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if lines == 0 && !(hasEq && isMetaFieldPrefix(key, true) || !hasEq && !complete && isMetaFieldPrefix(key, false)) {
			return nil, fmt.Errorf("does not start with a MetaIO field: %w", ErrNoProof)
		}
		if !complete {
			return nil, &IncompleteError{Want: -1, Have: off, Detail: "no complete ElementDataFile line"}
		}
		if lines++; lines > maxMetaLines {
			return nil, fmt.Errorf("no ElementDataFile in %d header lines: %w", maxMetaLines, ErrNoProof)
		}
		if !hasEq {
			continue
		}
		switch strings.ToLower(key) {
		case "ndims":
			if n, err := strconv.ParseInt(value, 10, 64); err == nil && n > 0 {
				ndims = n
			}
		case "dimsize":
			dims = dims[:0]
			for _, f := range strings.Fields(value) {
				d, err := strconv.ParseInt(f, 10, 64)
				if err != nil || d < 0 {
					dims = nil
					break
				}
				if len(dims) < 64 { // MetaIO has at most 10 dimensions
					dims = append(dims, d)
				}
			}
		case "elementtype":
			elemSize = metaElementSize(value)
		case "elementnumberofchannels":
			channels = -1
			if c, err := strconv.ParseInt(value, 10, 64); err == nil && c > 0 {
				channels = c
			}
		case "headersize":
			if v, err := strconv.ParseInt(value, 10, 64); err == nil && v >= -1 {
				h.HeaderSize = v
			} else {
				h.HeaderSize = -2 // unusable: no proof
			}
		case "compresseddata":
			h.Compressed = strings.EqualFold(value, "true")
		case "compresseddatasize":
			if v, err := strconv.ParseInt(value, 10, 64); err == nil && v > 0 {
				compSize = v
			}
		case "binarydata":
			binary = !strings.EqualFold(value, "false")
		case "elementdatafile":
			h.End, h.DataFile = off, value
			h.DataSize = metaDataSize(dims, ndims, elemSize, channels, compSize, binary, h)
			return h, nil
		}
	}
}

// metaDataSize is the stored size of the element data, or -1.
func metaDataSize(dims []int64, ndims, elemSize, channels, compSize int64, binary bool, h *MetaImageHeader) int64 {
	switch {
	case !binary || h.HeaderSize < -1:
		return -1
	case h.Compressed:
		return compSize
	case elemSize < 0 || channels < 1 || len(dims) == 0 || ndims > int64(len(dims)):
		return -1
	}
	if ndims > 0 {
		dims = dims[:ndims]
	}
	total := elemSize * channels
	for _, d := range dims {
		if d != 0 && total > (1<<62)/d {
			return -1
		}
		total *= d
	}
	return total
}

// CheckData proves a file holding this header's element data complete: the
// .mha itself (or an .mhd with LOCAL data) or the single data file an .mhd
// names, of the given size. A LIST or a file-name pattern has no proof here.
func (h *MetaImageHeader) CheckData(size int64) error {
	if f := strings.Fields(h.DataFile); len(f) == 0 || strings.EqualFold(f[0], "LIST") || len(f) > 1 && strings.Contains(f[0], "%") {
		return fmt.Errorf("ElementDataFile %q: %w", h.DataFile, ErrNoProof)
	}
	if h.DataSize < 0 {
		return fmt.Errorf("MetaImage data size not in the header (compressed without CompressedDataSize, ASCII or unknown type): %w", ErrNoProof)
	}
	var start int64
	switch {
	case h.HeaderSize > 0:
		start = h.HeaderSize
		if h.Local() && start < h.End {
			return fmt.Errorf("HeaderSize inside the header: %w", ErrNoProof)
		}
	case h.Local():
		start = h.End
	}
	want := start + h.DataSize
	switch {
	case h.HeaderSize == -1 && size < want:
		// The data is the file's last DataSize bytes: any file this long
		// has them, so only a shorter one is known to be cut.
		return &IncompleteError{Want: want, AtLeast: true, Have: size}
	case h.HeaderSize == -1:
		return nil
	case size < want:
		return &IncompleteError{Want: want, Have: size}
	case size > want:
		return &OverlongError{Want: want, Have: size}
	}
	return nil
}

func checkMHA(r io.ReaderAt, size int64) error {
	h, err := ParseMetaImage(io.NewSectionReader(r, 0, size))
	if err != nil {
		return err
	}
	if !h.Local() {
		return formatErr("MetaImage", "an .mha keeps its data LOCAL, not in %q", h.DataFile)
	}
	return h.CheckData(size)
}

// checkMHDLocal proves an .mhd whose data is LOCAL; one with a data file has
// its header proven complete here and its data by CheckData on that file.
func checkMHDLocal(r io.ReaderAt, size int64) error {
	h, err := ParseMetaImage(io.NewSectionReader(r, 0, size))
	if err != nil {
		return err
	}
	if !h.Local() {
		return nil // the header is whole; the data file is checked on its own
	}
	return h.CheckData(size)
}

// CheckMHD proves the data of an .mhd complete: header reads the .mhd (of
// headerSize bytes), dataSize is the size of the one data file it names
// (ignored for LOCAL data). A cut header is an *IncompleteError about the
// .mhd; the data file's verdicts are CheckData's.
func CheckMHD(header io.ReaderAt, headerSize, dataSize int64) error {
	h, err := ParseMetaImage(io.NewSectionReader(header, 0, headerSize))
	if err != nil {
		return err
	}
	if h.Local() {
		return h.CheckData(headerSize)
	}
	return h.CheckData(dataSize)
}

// headerReadSize is how much a text header is read at a time: a MetaIO or
// NRRD header is usually well under 1 KiB, and classifying a drop folder
// of many files should not read 64 KiB of each.
const headerReadSize = 4096

// readLine returns the next line of br, with its newline; lines longer than
// br's buffer are gathered up to max bytes (bufio.ErrBufferFull beyond).
// At the end of the input it returns what is left and io.EOF.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if !errors.Is(err, bufio.ErrBufferFull) {
		return line, err
	}
	long := append([]byte(nil), line...)
	for errors.Is(err, bufio.ErrBufferFull) && len(long) <= max {
		line, err = br.ReadSlice('\n')
		long = append(long, line...)
	}
	if len(long) > max {
		return nil, bufio.ErrBufferFull
	}
	return long, err
}
