package group

import (
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/gcingest/gcingest/dicom"
)

// dicomPrefixLen is the preamble and the "DICM" magic of a Part-10 file.
const dicomPrefixLen = 132

// isDICOMPrefix reports whether b (the first 132 bytes of a file) carries
// the Part-10 magic.
func isDICOMPrefix(b []byte) bool {
	return len(b) >= dicomPrefixLen && string(b[128:dicomPrefixLen]) == "DICM"
}

// dicomInfo is what grouping keeps of a DICOM file: its header as package
// dicom reads it, and whether the header got as far as the pixel data (or
// the end), so that a missing UID means the file has none rather than that
// it was cut short before it.
type dicomInfo struct {
	dicom.Header
	UIDsKnown bool
}

// readDICOM reads the whole file (dicom.Verify: a file cut anywhere,
// pixel data included, is truncated). It returns the header fields found
// before an error with it.
func readDICOM(r io.ReaderAt, size int64) (dicomInfo, error) {
	h, err := dicom.Verify(io.NewSectionReader(r, 0, size))
	return dicomInfo{Header: h, UIDsKnown: err == nil || h.PixelDataOffset >= 0}, err
}

// seriesKey is a DICOM group's key: panimg's grouping key (study, StackID
// at the top level else series, SOP class; see dicom.Header.GroupKey)
// within one folder, since the server builds images per folder of an
// upload and two folders holding the same UIDs are two images here.
func seriesKey(dir string, h dicom.Header) string {
	study, stack, sop := h.GroupKey()
	return "dicom:" + dir + "/" + study + "/" + stack + "/" + sop
}

// IsDICOMKey reports whether a group key names a DICOM group.
func IsDICOMKey(key string) bool { return strings.HasPrefix(key, "dicom:") }

// sopClassNames names the SOP classes a drop folder commonly holds, for
// what plan and status show.
var sopClassNames = map[string]string{
	"1.2.840.10008.5.1.4.1.1.2":     "CT",
	"1.2.840.10008.5.1.4.1.1.2.1":   "enhanced CT",
	"1.2.840.10008.5.1.4.1.1.4":     "MR",
	"1.2.840.10008.5.1.4.1.1.4.1":   "enhanced MR",
	"1.2.840.10008.5.1.4.1.1.128":   "PET",
	"1.2.840.10008.5.1.4.1.1.1":     "CR",
	"1.2.840.10008.5.1.4.1.1.1.1":   "digital X-ray",
	"1.2.840.10008.5.1.4.1.1.6.1":   "ultrasound",
	"1.2.840.10008.5.1.4.1.1.7":     "secondary capture",
	"1.2.840.10008.5.1.4.1.1.88.67": "dose report",
	"1.2.840.10008.5.1.4.1.1.11.1":  "presentation state",
	"1.2.840.10008.5.1.4.1.1.88.11": "structured report",
	"1.2.840.10008.5.1.4.1.1.88.22": "structured report",
}

// dicomLabel describes a DICOM group for people: folder, series number and
// description, SOP class, file count, and whether it is a 4D set.
func dicomLabel(b *build) string {
	h := b.files[0].info.dicom
	dir := path.Dir(b.files[0].rel)
	var parts []string
	if h.SeriesNumber != "" {
		parts = append(parts, "series "+h.SeriesNumber)
	}
	if h.SeriesDescription != "" {
		parts = append(parts, fmt.Sprintf("%q", h.SeriesDescription))
	}
	if n := sopClassNames[h.SOPClassUID]; n != "" {
		parts = append(parts, n)
	} else {
		parts = append(parts, "SOP class "+h.SOPClassUID)
	}
	if h.StackIDTopLevel {
		parts = append(parts, "4D set (stack "+h.StackID+")")
	}
	files := "1 file"
	if len(b.files) != 1 {
		files = fmt.Sprintf("%d files", len(b.files))
	}
	return fmt.Sprintf("DICOM %s: %s, %s", dir, strings.Join(parts, " "), files)
}

// truncated reports whether err says the file ends early.
func truncated(err error) bool { return errors.Is(err, dicom.ErrTruncated) }
