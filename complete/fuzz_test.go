package complete

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// Fuzz targets, one per proof: no input may panic, hang or allocate in
// proportion to a declared count, and the verdict must be consistent with
// the input's size. Seeds are the generated samples and cuts of them.

func fuzzSeeds(f *testing.F, files ...[]byte) {
	for _, b := range files {
		f.Add(b)
		for _, cut := range []int{1, 4, 8, 16, 64, len(b) / 2, len(b) - 1} {
			if cut > 0 && cut < len(b) {
				f.Add(b[:cut])
			}
		}
	}
}

func fuzzCheck(t *testing.T, b []byte, names ...string) {
	for _, name := range names {
		err := Check(bytes.NewReader(b), int64(len(b)), name)
		var ie *IncompleteError
		var oe *OverlongError
		switch {
		case errors.As(err, &ie):
			if ie.Have != int64(len(b)) {
				t.Fatalf("%s: Have = %d, want %d (%v)", name, ie.Have, len(b), err)
			}
			if ie.Want >= 0 && ie.Want <= ie.Have && !ie.AtLeast && ie.Detail == "" {
				t.Fatalf("%s: incomplete although Want %d <= Have %d", name, ie.Want, ie.Have)
			}
		case errors.As(err, &oe):
			if oe.Want >= oe.Have {
				t.Fatalf("%s: overlong although Want %d >= Have %d", name, oe.Want, oe.Have)
			}
		}
		if err != nil && err.Error() == "" {
			t.Fatalf("%s: an error without a message", name)
		}
	}
}

func FuzzCheckMHA(f *testing.F) {
	fuzzSeeds(f, genMHA([]int{3, 2, 2}, "MET_SHORT", 2, 1, ""),
		genMHA([]int{2, 2}, "MET_UCHAR_ARRAY", 1, 3, "HeaderSize = -1\n"),
		[]byte("ObjectType = Image\nCompressedData = True\nCompressedDataSize = 5\nDimSize = 9\nElementType = MET_FLOAT\nElementDataFile = LOCAL\n12345"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.mha", "a.mhd") })
}

func FuzzCheckNIfTI(f *testing.F) {
	le, be := binary.LittleEndian, binary.BigEndian
	n1, n2 := genNIfTI(1, le, []int{4, 3, 2}, 16), genNIfTI(2, be, []int{3, 3}, 8)
	fuzzSeeds(f, n1, n2, gz(f, n1), gz(f, n2))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.nii", "a.nii.gz") })
}

func FuzzCheckNRRD(f *testing.F) {
	fuzzSeeds(f, genNRRD(f, "raw", []int{4, 3}, "short", 2), genNRRD(f, "gzip", []int{5, 5}, "double", 8),
		[]byte("NRRD0004\ntype: uchar\nsizes: 3\nbyte skip: -1\nencoding: raw\n\nabcdef"))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.nrrd") })
}

func FuzzCheckTIFF(f *testing.F) {
	le, be := binary.LittleEndian, binary.BigEndian
	fuzzSeeds(f, genTIFF(tiffSpec{bo: le, pages: 2, pieces: 2, subIFD: true}),
		genTIFF(tiffSpec{bo: be, pages: 1, pieces: 3, tiles: true}),
		genTIFF(tiffSpec{big: true, bo: le, pages: 2, pieces: 2, subIFD: true}),
		genTIFF(tiffSpec{big: true, bo: be, pages: 1, pieces: 2, tiles: true}))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.tif", "a.svs", "a.ndpi") })
}

func FuzzCheckPNG(f *testing.F) {
	fuzzSeeds(f, genPNG(f, 5, 4), genPNG(f, 1, 1))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.png") })
}

func FuzzCheckJPEG(f *testing.F) {
	fuzzSeeds(f, genJPEG(f, 8, 8), genJPEG(f, 17, 9))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCheck(t, b, "a.jpg") })
}
