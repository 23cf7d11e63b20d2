package gcapitest

import (
	"encoding/binary"
	"strconv"
	"strings"
)

// DICOM transfer syntaxes this fake reads.
const (
	tsImplicitLE = "1.2.840.10008.1.2"
	tsExplicitLE = "1.2.840.10008.1.2.1"
)

// dicomGroup is where one DICOM file goes.
type dicomGroup struct {
	// key is panimg's grouping key (StudyInstanceUID, StackID if present
	// else SeriesInstanceUID, SOPClassUID): rse-panimg
	// panimg/image_builders/dicom.py get_dicom_headers_by_study. Series
	// sharing a StackID are one (4D) image.
	key           [3]string
	study, series string
	// frames is NumberOfFrames (0028,0008), 1 when absent: panimg counts
	// an image's slices as files × frames per file (image_builders/dicom.py
	// _find_valid_dicom_files, n_slices), and the image's depth is that
	// count (panimg/models.py SimpleITKImage.depth, GetDepth()).
	frames int
}

// dicomKey reads the grouping key from the start of a DICOM Part-10 file.
// It reads only the bytes given.
func dicomKey(b []byte) (dicomGroup, bool) {
	if len(b) < 132 || string(b[128:132]) != "DICM" {
		return dicomGroup{}, false
	}
	d := &dcmReader{b: b, pos: 132, explicit: true}
	ts := tsExplicitLE
	var study, series, class, stack string
	frames := 1
	for !d.done() {
		tag, val, ok := d.next()
		if !ok {
			return dicomGroup{}, false
		}
		if tag>>16 != 0x0002 {
			// First element past the meta group: switch transfer syntax.
			d.pos = d.last
			d.explicit = ts != tsImplicitLE
			break
		}
		if tag == 0x00020010 {
			ts = uid(val)
		}
	}
	for !d.done() {
		tag, val, ok := d.next()
		if !ok {
			break
		}
		switch tag {
		case 0x00080016:
			class = uid(val)
		case 0x0020000D:
			study = uid(val)
		case 0x0020000E:
			series = uid(val)
		case 0x00209056:
			stack = strings.TrimRight(string(val), "\x00 ")
		case 0x00280008:
			if n, err := strconv.Atoi(strings.TrimSpace(strings.TrimRight(string(val), "\x00"))); err == nil && n > 0 {
				frames = n
			}
		}
		if tag >= 0x00280008 {
			break
		}
	}
	if study == "" || series == "" || class == "" {
		return dicomGroup{}, false
	}
	g := dicomGroup{key: [3]string{study, series, class}, study: study, series: series, frames: frames}
	if stack != "" {
		g.key[1] = stack
	}
	return g, true
}

func uid(v []byte) string { return strings.TrimRight(string(v), "\x00 ") }

type dcmReader struct {
	b        []byte
	pos      int
	last     int
	explicit bool
}

func (d *dcmReader) done() bool { return d.pos+8 > len(d.b) }

// next reads one data element; sequences of undefined length are skipped.
func (d *dcmReader) next() (uint32, []byte, bool) {
	d.last = d.pos
	if d.pos+8 > len(d.b) {
		return 0, nil, false
	}
	le := binary.LittleEndian
	tag := uint32(le.Uint16(d.b[d.pos:]))<<16 | uint32(le.Uint16(d.b[d.pos+2:]))
	var length uint32
	if d.explicit && tag>>16 != 0xFFFE {
		vr := string(d.b[d.pos+4 : d.pos+6])
		switch vr {
		case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
			if d.pos+12 > len(d.b) {
				return 0, nil, false
			}
			length = le.Uint32(d.b[d.pos+8:])
			d.pos += 12
		default:
			length = uint32(le.Uint16(d.b[d.pos+6:]))
			d.pos += 8
		}
	} else {
		length = le.Uint32(d.b[d.pos+4:])
		d.pos += 8
	}
	if length == 0xFFFFFFFF {
		// Undefined length (a sequence or an item): skip to its delimiter.
		depth := 1
		for depth > 0 {
			if d.pos+8 > len(d.b) {
				return 0, nil, false
			}
			t := uint32(le.Uint16(d.b[d.pos:]))<<16 | uint32(le.Uint16(d.b[d.pos+2:]))
			l := le.Uint32(d.b[d.pos+4:])
			switch {
			case t == 0xFFFEE0DD || t == 0xFFFEE00D:
				depth--
				d.pos += 8
			case t == 0xFFFEE000 && l == 0xFFFFFFFF:
				depth++
				d.pos += 8
			case t == 0xFFFEE000:
				d.pos += 8 + int(l)
			default:
				_, _, ok := d.next()
				if !ok {
					return 0, nil, false
				}
			}
		}
		return tag, nil, true
	}
	if int(length) < 0 || d.pos+int(length) > len(d.b) {
		return 0, nil, false
	}
	v := d.b[d.pos : d.pos+int(length)]
	d.pos += int(length)
	return tag, v, true
}
