package gcapitest

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"fmt"
	mrand "math/rand/v2"
	"time"
)

// Sample image generators for tests across the repository and for
// `gcingest demo`. Every generator is deterministic in its arguments.

func sampleVoxels(seed int64, n int) []byte {
	r := mrand.New(mrand.NewPCG(uint64(seed), 0x5eed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.UintN(256))
	}
	return b
}

func clampDims(w, h, d int) (int, int, int) {
	return max(w, 1), max(h, 1), max(d, 1)
}

func metaIOHeader(w, h, d int, dataFile string) string {
	return fmt.Sprintf("ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"+
		"CompressedData = False\nTransformMatrix = 1 0 0 0 1 0 0 0 1\nOffset = 0 0 0\nCenterOfRotation = 0 0 0\n"+
		"AnatomicalOrientation = RAI\nElementSpacing = 1 1 1\nDimSize = %d %d %d\nElementType = MET_UCHAR\n"+
		"ElementDataFile = %s\n", w, h, d, dataFile)
}

// SampleMHA returns a valid MetaIO .mha image of w×h×d unsigned bytes with
// the data LOCAL, filled from seed.
func SampleMHA(seed int64, w, h, d int) []byte {
	w, h, d = clampDims(w, h, d)
	return append([]byte(metaIOHeader(w, h, d, "LOCAL")), sampleVoxels(seed, w*h*d)...)
}

// SampleMHDPair returns an .mhd header naming dataName as its
// ElementDataFile, and the raw data file's bytes.
func SampleMHDPair(seed int64, w, h, d int, dataName string) (header, data []byte) {
	w, h, d = clampDims(w, h, d)
	return []byte(metaIOHeader(w, h, d, dataName)), sampleVoxels(seed, w*h*d)
}

// SampleNIfTI returns a single-file NIfTI-1 (.nii) image of unsigned bytes.
func SampleNIfTI(seed int64, w, h, d int) []byte {
	w, h, d = clampDims(w, h, d)
	hdr := make([]byte, 352)
	le := binary.LittleEndian
	le.PutUint32(hdr[0:], 348)
	dims := []int16{3, int16(w), int16(h), int16(d), 1, 1, 1, 1}
	for i, v := range dims {
		le.PutUint16(hdr[40+2*i:], uint16(v))
	}
	le.PutUint16(hdr[70:], 2) // datatype DT_UNSIGNED_CHAR
	le.PutUint16(hdr[72:], 8) // bitpix
	for i := range 8 {
		le.PutUint32(hdr[76+4*i:], 0x3f800000) // pixdim = 1.0
	}
	le.PutUint32(hdr[108:], 0x43b00000) // vox_offset = 352.0
	copy(hdr[344:], "n+1\x00")
	return append(hdr, sampleVoxels(seed, w*h*d)...)
}

// SampleTIFF returns a minimal baseline TIFF: one strip of w×h 8-bit
// grey pixels.
func SampleTIFF(seed int64, w, h int) []byte {
	w, h, _ = clampDims(w, h, 1)
	pix := sampleVoxels(seed, w*h)
	var b bytes.Buffer
	le := binary.LittleEndian
	b.WriteString("II*\x00")
	binary.Write(&b, le, uint32(8))
	type ent struct {
		tag, typ uint16
		val      uint32
	}
	const nEnt = 9
	dataOff := uint32(8 + 2 + nEnt*12 + 4)
	ents := []ent{
		{256, 4, uint32(w)}, {257, 4, uint32(h)}, {258, 3, 8}, {259, 3, 1}, {262, 3, 1},
		{273, 4, dataOff}, {277, 3, 1}, {278, 4, uint32(h)}, {279, 4, uint32(len(pix))},
	}
	binary.Write(&b, le, uint16(nEnt))
	for _, e := range ents {
		binary.Write(&b, le, e.tag)
		binary.Write(&b, le, e.typ)
		binary.Write(&b, le, uint32(1))
		if e.typ == 3 {
			binary.Write(&b, le, uint16(e.val))
			binary.Write(&b, le, uint16(0))
		} else {
			binary.Write(&b, le, e.val)
		}
	}
	binary.Write(&b, le, uint32(0))
	b.Write(pix)
	return b.Bytes()
}

// DICOM UIDs of the sample series; the instance UID adds ".<n>".
const (
	SampleStudyUID  = "1.2.826.0.1.3680043.10.1234.1"
	SampleSeriesUID = "1.2.826.0.1.3680043.10.1234.1.1"
	SampleSOPClass  = "1.2.840.10008.5.1.4.1.1.2" // CT Image Storage
)

// SampleDICOMSeries returns n minimal DICOM Part-10 files (explicit VR
// little endian) of one series, with Study/Series/SOPClass/SOPInstance UIDs
// and 4×4 8-bit pixel data, named "IM000001.dcm" onwards.
func SampleDICOMSeries(n int) map[string][]byte {
	return SampleDICOMSeriesUIDs(1, n, SampleStudyUID, SampleSeriesUID)
}

// SampleDICOMSeriesUIDs is SampleDICOMSeries with the study and series
// UIDs given, to make several series.
func SampleDICOMSeriesUIDs(seed int64, n int, studyUID, seriesUID string) map[string][]byte {
	return SampleDICOMSeriesStack(seed, n, studyUID, seriesUID, "")
}

// SampleDICOMSeriesStack is SampleDICOMSeriesUIDs with a StackID
// (0020,9056) in every file unless stackID is "". Series of one study that
// share a StackID are one (4D) image to the server.
func SampleDICOMSeriesStack(seed int64, n int, studyUID, seriesUID, stackID string) map[string][]byte {
	out := map[string][]byte{}
	for i := 1; i <= n; i++ {
		sop := fmt.Sprintf("%s.%d", seriesUID, i)
		out[fmt.Sprintf("IM%06d.dcm", i)] = dicomFile(seed+int64(i), studyUID, seriesUID, SampleSOPClass, sop, stackID, i)
	}
	return out
}

func dicomFile(seed int64, study, series, class, sop, stack string, number int) []byte {
	var meta, ds bytes.Buffer
	elem(&meta, 0x0002, 0x0001, "OB", []byte{0, 1})
	elem(&meta, 0x0002, 0x0002, "UI", uidBytes(class))
	elem(&meta, 0x0002, 0x0003, "UI", uidBytes(sop))
	elem(&meta, 0x0002, 0x0010, "UI", uidBytes(tsExplicitLE))
	elem(&meta, 0x0002, 0x0012, "UI", uidBytes("1.2.826.0.1.3680043.10.1234.99"))
	elem(&ds, 0x0008, 0x0016, "UI", uidBytes(class))
	elem(&ds, 0x0008, 0x0018, "UI", uidBytes(sop))
	elem(&ds, 0x0008, 0x0060, "CS", evenPad("CT", ' '))
	elem(&ds, 0x0010, 0x0010, "PN", evenPad("DEMO^PATIENT", ' '))
	elem(&ds, 0x0010, 0x0020, "LO", evenPad("DEMO001", ' '))
	elem(&ds, 0x0020, 0x000D, "UI", uidBytes(study))
	elem(&ds, 0x0020, 0x000E, "UI", uidBytes(series))
	elem(&ds, 0x0020, 0x0013, "IS", evenPad(fmt.Sprint(number), ' '))
	elem(&ds, 0x0020, 0x0032, "DS", evenPad(fmt.Sprintf("0\\0\\%d", number), ' '))
	if stack != "" {
		elem(&ds, 0x0020, 0x9056, "SH", evenPad(stack, ' '))
	}
	elem(&ds, 0x0028, 0x0002, "US", []byte{1, 0})
	elem(&ds, 0x0028, 0x0004, "CS", evenPad("MONOCHROME2", ' '))
	elem(&ds, 0x0028, 0x0010, "US", []byte{4, 0})
	elem(&ds, 0x0028, 0x0011, "US", []byte{4, 0})
	elem(&ds, 0x0028, 0x0100, "US", []byte{8, 0})
	elem(&ds, 0x0028, 0x0101, "US", []byte{8, 0})
	elem(&ds, 0x0028, 0x0102, "US", []byte{7, 0})
	elem(&ds, 0x0028, 0x0103, "US", []byte{0, 0})
	elem(&ds, 0x7FE0, 0x0010, "OB", sampleVoxels(seed, 16))
	var out bytes.Buffer
	out.Write(make([]byte, 128))
	out.WriteString("DICM")
	var gl bytes.Buffer
	binary.Write(&gl, binary.LittleEndian, uint32(meta.Len()))
	elem(&out, 0x0002, 0x0000, "UL", gl.Bytes())
	out.Write(meta.Bytes())
	out.Write(ds.Bytes())
	return out.Bytes()
}

func uidBytes(s string) []byte { return evenPad(s, 0) }

func evenPad(s string, pad byte) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, pad)
	}
	return b
}

// elem writes one explicit-VR little-endian data element.
func elem(b *bytes.Buffer, group, element uint16, vr string, val []byte) {
	le := binary.LittleEndian
	binary.Write(b, le, group)
	binary.Write(b, le, element)
	b.WriteString(vr)
	switch vr {
	case "OB", "OW", "SQ", "UN", "UT":
		b.Write([]byte{0, 0})
		binary.Write(b, le, uint32(len(val)))
	default:
		binary.Write(b, le, uint16(len(val)))
	}
	b.Write(val)
}

// SampleZIP packs files into a ZIP deterministically (sorted names, fixed
// timestamps).
func SampleZIP(files map[string][]byte) []byte {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, name := range sortedKeys(files) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)})
		if err != nil {
			return nil
		}
		w.Write(files[name])
	}
	zw.Close()
	return b.Bytes()
}
