package group

import (
	"bufio"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// mhdHeader is what the grouper needs from a MetaIO .mhd header.
type mhdHeader struct {
	// DataFile is the base name of the data file in the header's folder;
	// empty when the data is inline (LOCAL) or the form is unsupported.
	DataFile string
	Local    bool // ElementDataFile = LOCAL: the data follows the header
	// Unsupported says why the data file cannot be grouped (LIST, a file
	// pattern, a path outside the folder, no ElementDataFile); the .mhd is
	// then an image of its own and the server judges it.
	Unsupported string
	// Expected is the data file's size implied by the header, or -1 when the
	// header does not tell (compressed data, unknown element type).
	Expected int64
}

// The same limits the server applies (panimg parse_mh_header).
const (
	maxMHDLines    = 10000
	maxMHDLineSize = 10000
)

// mhdElementSize returns the bytes per element of a MetaIO element type,
// or -1 for a type it does not know.
func mhdElementSize(t string) int64 {
	switch strings.ToUpper(t) {
	case "MET_CHAR", "MET_UCHAR":
		return 1
	case "MET_SHORT", "MET_USHORT":
		return 2
	case "MET_INT", "MET_UINT", "MET_LONG", "MET_ULONG", "MET_FLOAT": // MetaIO longs are 32 bits
		return 4
	case "MET_LONG_LONG", "MET_ULONG_LONG", "MET_DOUBLE":
		return 8
	}
	return -1
}

// parseMHD reads a MetaIO header up to its ElementDataFile line (by
// convention the last). An error means the header could not be read; a header
// that is only odd is reported through Unsupported.
func parseMHD(r io.Reader) (mhdHeader, error) {
	h := mhdHeader{Expected: -1}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxMHDLineSize)
	var (
		dims       []int64
		elemSize   int64 = -1
		channels   int64 = 1
		headerSize int64
		compressed bool
		dataFile   string
		found      bool
	)
	for n := 0; sc.Scan() && n < maxMHDLines; n++ {
		key, value, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		switch strings.ToLower(key) {
		case "dimsize":
			dims = dims[:0]
			for _, f := range strings.Fields(value) {
				d, err := strconv.ParseInt(f, 10, 64)
				if err != nil || d < 0 {
					dims = nil
					break
				}
				dims = append(dims, d)
			}
		case "elementtype":
			elemSize = mhdElementSize(value)
		case "elementnumberofchannels":
			if c, err := strconv.ParseInt(value, 10, 64); err == nil && c > 0 {
				channels = c
			}
		case "headersize":
			if v, err := strconv.ParseInt(value, 10, 64); err == nil {
				headerSize = v
			}
		case "compresseddata":
			compressed = strings.EqualFold(value, "true")
		case "elementdatafile":
			dataFile, found = value, true
		}
		if found {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return h, fmt.Errorf("read header: %w", err)
	}
	switch {
	case !found:
		h.Unsupported = "no ElementDataFile in the header"
		return h, nil
	case strings.EqualFold(dataFile, "LOCAL"):
		h.Local = true
		return h, nil
	case strings.HasPrefix(strings.ToUpper(dataFile), "LIST"):
		h.Unsupported = "ElementDataFile = LIST (a list of data files) is not supported"
		return h, nil
	case isMHDPattern(dataFile):
		h.Unsupported = fmt.Sprintf("ElementDataFile %q is a file-name pattern, which is not supported", dataFile)
		return h, nil
	case dataFile == "" || dataFile == "." || dataFile == ".." || strings.ContainsAny(dataFile, `/\`):
		h.Unsupported = fmt.Sprintf("ElementDataFile %q is not a file in the header's folder", dataFile)
		return h, nil
	}
	h.DataFile = dataFile
	if compressed || elemSize < 0 || len(dims) == 0 || headerSize < 0 {
		return h, nil // the size cannot be told; the file only has to exist
	}
	total := elemSize * channels
	for _, d := range dims {
		if d != 0 && total > (1<<62)/d {
			return h, nil // absurd; let the server judge
		}
		total *= d
	}
	h.Expected = total + headerSize
	return h, nil
}

// isMHDPattern reports the MetaIO "pattern min max step" form of
// ElementDataFile, e.g. "slice%03d.raw 1 40 1".
func isMHDPattern(v string) bool {
	f := strings.Fields(v)
	if len(f) < 4 || !strings.Contains(f[0], "%") {
		return false
	}
	for _, n := range f[len(f)-3:] {
		if _, err := strconv.Atoi(n); err != nil {
			return false
		}
	}
	return true
}
