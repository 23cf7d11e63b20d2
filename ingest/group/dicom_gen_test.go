package group

import (
	"encoding/binary"
	"strings"
)

// dicomSpec describes a small synthetic DICOM Part-10 file.
type dicomSpec struct {
	study, series, sopClass, instance string
	pixels                            int  // bytes of pixel data
	implicit                          bool // implicit VR little endian data set
	encapsulated                      bool // pixel data as fragments of undefined length
	noSeries                          bool
	stackID                           string // (0020,9056) at the top level when set: a 4D set
}

// makeDICOM writes a Part-10 file: preamble, meta group, a few attributes
// including an undefined-length sequence, the UIDs, and pixel data.
func makeDICOM(study, series, sopClass, instance string, pixels int) []byte {
	return dicomSpec{study: study, series: series, sopClass: sopClass, instance: instance, pixels: pixels}.bytes()
}

func (s dicomSpec) bytes() []byte {
	le := binary.LittleEndian
	var b []byte
	b = append(b, make([]byte, 128)...)
	b = append(b, "DICM"...)
	explicit := func(group, elem uint16, vr string, val []byte) {
		if len(val)%2 == 1 {
			pad := byte(' ')
			if vr == "UI" || vr == "OB" {
				pad = 0
			}
			val = append(val, pad)
		}
		b = le.AppendUint16(b, group)
		b = le.AppendUint16(b, elem)
		b = append(b, vr...)
		switch vr {
		case "OB", "OW", "SQ", "UN", "UT":
			b = append(b, 0, 0)
			b = le.AppendUint32(b, uint32(len(val)))
		default:
			b = le.AppendUint16(b, uint16(len(val)))
		}
		b = append(b, val...)
	}
	implicit := func(group, elem uint16, _ string, val []byte) {
		if len(val)%2 == 1 {
			val = append(val, 0)
		}
		b = le.AppendUint16(b, group)
		b = le.AppendUint16(b, elem)
		b = le.AppendUint32(b, uint32(len(val)))
		b = append(b, val...)
	}
	ts := "1.2.840.10008.1.2.1"
	if s.implicit {
		ts = tsImplicitLE
	}
	if s.encapsulated {
		ts = "1.2.840.10008.1.2.4.50"
	}
	explicit(0x0002, 0x0001, "OB", []byte{0, 1})
	explicit(0x0002, 0x0002, "UI", []byte(s.sopClass))
	explicit(0x0002, 0x0003, "UI", []byte(s.instance))
	explicit(0x0002, 0x0010, "UI", []byte(ts))
	el := explicit
	if s.implicit {
		el = implicit
	}
	rawHeader := func(group, elem uint16, vr string, length uint32) {
		b = le.AppendUint16(b, group)
		b = le.AppendUint16(b, elem)
		if !s.implicit && vr != "" {
			b = append(b, vr...)
			b = append(b, 0, 0)
		}
		b = le.AppendUint32(b, length)
	}
	el(0x0008, 0x0016, "UI", []byte(s.sopClass))
	el(0x0008, 0x0018, "UI", []byte(s.instance))
	// (0008,1140) Referenced Image Sequence, undefined length, one
	// undefined-length item.
	rawHeader(0x0008, 0x1140, "SQ", undefinedLength)
	rawHeader(0xFFFE, 0xE000, "", undefinedLength)
	el(0x0008, 0x1150, "UI", []byte(s.sopClass))
	el(0x0008, 0x1155, "UI", []byte(s.instance+".9"))
	rawHeader(0xFFFE, 0xE00D, "", 0)
	rawHeader(0xFFFE, 0xE0DD, "", 0)
	el(0x0010, 0x0010, "PN", []byte("Test^Patient"))
	el(0x0020, 0x000D, "UI", []byte(s.study))
	if !s.noSeries {
		el(0x0020, 0x000E, "UI", []byte(s.series))
	}
	el(0x0020, 0x0013, "IS", []byte(lastPart(s.instance)))
	if s.stackID != "" {
		el(0x0020, 0x9056, "SH", []byte(s.stackID))
	}
	el(0x0028, 0x0010, "US", []byte{1, 0})
	pix := make([]byte, s.pixels)
	for i := range pix {
		pix[i] = byte(i)
	}
	if s.encapsulated {
		rawHeader(0x7FE0, 0x0010, "OB", undefinedLength)
		rawHeader(0xFFFE, 0xE000, "", 0) // empty offset table
		half := len(pix) / 2 &^ 1
		for _, frag := range [][]byte{pix[:half], pix[half : len(pix)&^1]} {
			rawHeader(0xFFFE, 0xE000, "", uint32(len(frag)))
			b = append(b, frag...)
		}
		rawHeader(0xFFFE, 0xE0DD, "", 0)
	} else {
		el(0x7FE0, 0x0010, "OW", pix)
	}
	return b
}

func lastPart(uid string) string {
	return uid[strings.LastIndexByte(uid, '.')+1:]
}

const (
	tsImplicitLE    = "1.2.840.10008.1.2"
	undefinedLength = 0xFFFFFFFF
	testCTClass     = "1.2.840.10008.5.1.4.1.1.2"
	testMRClass     = "1.2.840.10008.5.1.4.1.1.4"
)
