package group

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/gcingest/gcingest/complete"
)

// mhdHeader is what the grouper needs from a MetaIO .mhd header.
type mhdHeader struct {
	// DataFile is the base name of the data file in the header's folder;
	// empty when the data is inline (LOCAL) or the form is unsupported.
	DataFile string
	Local    bool // ElementDataFile = LOCAL: the data follows the header
	// Unsupported says why the data file cannot be grouped (LIST, a file
	// pattern, a path outside the folder, no MetaIO header); the .mhd is
	// then an image of its own and the server judges it.
	Unsupported string
	// Expected is the data file's size implied by the header, or -1 when the
	// header does not tell (compressed data without CompressedDataSize, an
	// unknown element type, HeaderSize -1).
	Expected int64
	// Cut is the *complete.IncompleteError of a header that ends before its
	// ElementDataFile line: still being written.
	Cut error
	// meta is the parsed header, which proves the data file complete.
	meta *complete.MetaImageHeader
}

// The same limits the server applies (panimg parse_mh_header).
const (
	maxMHDLines    = 10000
	maxMHDLineSize = 10000
)

// parseMHD reads a MetaIO header up to its ElementDataFile line (by
// convention the last) with package complete's parser. An error means the
// header could not be read; a header that is only odd is reported through
// Unsupported, one still being written through Cut.
func parseMHD(r io.Reader) (mhdHeader, error) {
	h := mhdHeader{Expected: -1}
	m, err := complete.ParseMetaImage(r)
	var ie *complete.IncompleteError
	switch {
	case errors.As(err, &ie):
		h.Cut = err
		return h, nil
	case errors.Is(err, complete.ErrNoProof):
		h.Unsupported = "no MetaIO header with an ElementDataFile (" + strings.TrimSuffix(err.Error(), ": "+complete.ErrNoProof.Error()) + ")"
		return h, nil
	case err != nil:
		return h, err
	}
	h.meta = m
	dataFile := m.DataFile
	switch {
	case m.Local():
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
	if m.DataSize >= 0 && m.HeaderSize >= 0 {
		h.Expected = m.HeaderSize + m.DataSize
	}
	return h, nil
}

// checkData is the proof of the data file's size d by the header, or an
// error wrapping complete.ErrNoProof.
func (h *mhdHeader) checkData(d int64) error {
	if h.meta == nil {
		return complete.ErrNoProof
	}
	return h.meta.CheckData(d)
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
