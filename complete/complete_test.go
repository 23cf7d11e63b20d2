package complete

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"
)

type sample struct {
	name string
	file string // the name Check sees
	data []byte
	// exact: the header defines the end, so one byte more is an
	// OverlongError; otherwise (TIFF) it is fine.
	exact bool
	// gzipped: the data is a gzip stream, proven by its trailer's size,
	// which must be the file's last 4 bytes.
	gzipped bool
}

func samples(t testing.TB) []sample {
	le, be := binary.LittleEndian, binary.BigEndian
	return []sample{
		{name: "mha uchar", file: "ct.mha", data: genMHA([]int{7, 5, 3}, "MET_UCHAR", 1, 1, ""), exact: true},
		{name: "mha short 3 channels", file: "ct.MHA", data: genMHA([]int{4, 4}, "MET_SHORT", 2, 3, "Comment = two dims\n"), exact: true},
		{name: "mha double array", file: "v.mha", data: genMHA([]int{3, 3, 2}, "MET_DOUBLE_ARRAY", 8, 1, ""), exact: true},
		{name: "mha long comment", file: "c.mha", data: genMHA([]int{9, 9}, "MET_UCHAR", 1, 1, "Comment = "+strings.Repeat("long ", 3000)+"\n"), exact: true},
		{name: "mhd local", file: "x.mhd", data: genMHA([]int{5, 5}, "MET_FLOAT", 4, 1, ""), exact: true},
		{name: "nifti1 le", file: "brain.nii", data: genNIfTI(1, le, []int{6, 5, 4}, 16), exact: true},
		{name: "nifti1 be", file: "brain.nii", data: genNIfTI(1, be, []int{6, 5, 4, 2}, 32), exact: true},
		{name: "nifti2 le", file: "brain.nii", data: genNIfTI(2, le, []int{9, 8}, 8), exact: true},
		{name: "nifti2 be", file: "brain.nii", data: genNIfTI(2, be, []int{3, 3, 3}, 64), exact: true},
		{name: "nifti1 gz", file: "brain.nii.gz", data: gz(t, genNIfTI(1, le, []int{40, 30, 20}, 16)), gzipped: true},
		{name: "nifti2 gz", file: "Brain.NII.GZ", data: gz(t, genNIfTI(2, be, []int{30, 20}, 8)), gzipped: true},
		{name: "nrrd raw", file: "seg.nrrd", data: genNRRD(t, "raw", []int{8, 7, 6}, "unsigned short", 2), exact: true},
		{name: "nrrd gzip", file: "seg.nrrd", data: genNRRD(t, "gzip", []int{30, 30, 10}, "float", 4), gzipped: true},
		{name: "tiff le strips", file: "a.tif", data: genTIFF(tiffSpec{bo: le, pages: 1, pieces: 5})},
		{name: "tiff be tiles pages", file: "a.tiff", data: genTIFF(tiffSpec{bo: be, pages: 3, pieces: 4, tiles: true})},
		{name: "bigtiff le subifd", file: "slide.svs", data: genTIFF(tiffSpec{big: true, bo: le, pages: 2, pieces: 3, subIFD: true})},
		{name: "bigtiff be tiles", file: "slide.bif", data: genTIFF(tiffSpec{big: true, bo: be, pages: 1, pieces: 6, tiles: true})},
		{name: "tiff subifd", file: "x.tif", data: genTIFF(tiffSpec{bo: le, pages: 2, pieces: 2, subIFD: true})},
		{name: "png", file: "photo.png", data: genPNG(t, 40, 30), exact: true},
		{name: "jpeg", file: "photo.jpg", data: genJPEG(t, 40, 30)},
	}
}

func check(b []byte, name string) error {
	return Check(bytes.NewReader(b), int64(len(b)), name)
}

// TestCompleteFilesPass: every generated file is proven complete.
func TestCompleteFilesPass(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			if !Supported(s.file) {
				t.Fatalf("Supported(%q) = false", s.file)
			}
			if err := check(s.data, s.file); err != nil {
				t.Fatalf("Check = %v, want nil", err)
			}
		})
	}
}

// TestCutFilesAreIncomplete: the same files cut anywhere are incomplete,
// with the file's size as Have and, once the header is whole, the full size
// (or a lower bound that exceeds the cut) as Want.
func TestCutFilesAreIncomplete(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			n := len(s.data)
			for _, cut := range []int{0, 1, 2, 3, 5, 9, 17, 100, 351, 400, n / 2, n - 100, n - 2, n - 1} {
				if cut < 0 || cut >= n {
					continue
				}
				err := check(s.data[:cut], s.file)
				var ie *IncompleteError
				if !errors.As(err, &ie) {
					t.Fatalf("cut at %d of %d: Check = %v, want IncompleteError", cut, n, err)
				}
				if ie.Have != int64(cut) {
					t.Errorf("cut at %d: Have = %d", cut, ie.Have)
				}
				switch {
				case ie.Want < 0: // inside the header, or an end marker missing
				case ie.AtLeast && (ie.Want <= int64(cut) || ie.Want > int64(n)):
					t.Errorf("cut at %d of %d: Want = at least %d", cut, n, ie.Want)
				case !ie.AtLeast && ie.Want != int64(n):
					t.Errorf("cut at %d of %d: Want = %d", cut, n, ie.Want)
				}
			}
		})
	}
}

// TestOneByteMore: where the header defines the end, one byte more is an
// OverlongError; TIFF and JPEG may be longer than what they reference.
func TestOneByteMore(t *testing.T) {
	for _, s := range samples(t) {
		t.Run(s.name, func(t *testing.T) {
			long := append(append([]byte(nil), s.data...), 0)
			err := check(long, s.file)
			var oe *OverlongError
			var ie *IncompleteError
			switch {
			case s.exact && !errors.As(err, &oe):
				t.Fatalf("Check = %v, want OverlongError", err)
			case s.exact && (oe.Want != int64(len(s.data)) || oe.Have != int64(len(long))):
				t.Errorf("OverlongError = %+v, want %d, %d", oe, len(s.data), len(long))
			case s.gzipped && !errors.As(err, &ie):
				// the gzip trailer is no longer the last 4 bytes
				t.Fatalf("Check = %v, want IncompleteError", err)
			case s.file == "photo.jpg" && !errors.As(err, &ie):
				t.Fatalf("Check = %v, want IncompleteError (no EOI at the end)", err)
			case !s.exact && !s.gzipped && s.file != "photo.jpg" && err != nil:
				t.Fatalf("Check = %v, want nil", err)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want string
	}{
		{&IncompleteError{Want: 1000, Have: 600}, "incomplete (header says 1000 bytes, file has 600)"},
		{&IncompleteError{Want: 1000, AtLeast: true, Have: 600, Detail: "no IEND chunk"}, "incomplete (header says at least 1000 bytes, file has 600): no IEND chunk"},
		{&IncompleteError{Want: -1, Have: 12}, "incomplete (file has 12 bytes): it ends inside its header"},
		{&OverlongError{Want: 10, Have: 11}, "longer than its header says (header says 10 bytes, file has 11)"},
		{&FormatError{Format: "PNG", Msg: "no PNG signature"}, "not a valid PNG file: no PNG signature"},
	} {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("got %q, want %q", got, tc.want)
		}
	}
}

// TestNoProof: formats and forms without a proof say so, and are never
// mistaken for complete or incomplete.
func TestNoProof(t *testing.T) {
	le := binary.LittleEndian
	ascii := []byte("ObjectType = Image\nNDims = 1\nDimSize = 3\nBinaryData = False\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n1 2 3\n")
	compressedNoSize := []byte("ObjectType = Image\nNDims = 1\nDimSize = 3\nCompressedData = True\nElementType = MET_UCHAR\nElementDataFile = LOCAL\nxxxx")
	detached := []byte("NRRD0004\ntype: uchar\nsizes: 3\nencoding: raw\ndata file: x.raw\n\n")
	bgzf := gz(t, genNIfTI(1, le, []int{3}, 8))
	bgzf[3] |= 4 // claim FEXTRA
	for _, tc := range []struct {
		name, file string
		data       []byte
	}{
		{"dicom", "x.dcm", []byte("anything")},
		{"unknown", "x.e2e", []byte("anything")},
		{"mha ascii data", "a.mha", ascii},
		{"mha compressed without size", "a.mha", compressedNoSize},
		{"mha not metaio", "a.mha", []byte("x")},
		{"mha zero bytes", "a.mha", make([]byte, 5000)},
		{"nrrd detached", "a.nrrd", detached},
		{"nii.gz fextra", "a.nii.gz", bgzf},
		{"svs odd", "a.svs", []byte("II*\x00\x08\x00\x00\x00\x00\x00")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := check(tc.data, tc.file); !errors.Is(err, ErrNoProof) {
				t.Errorf("Check = %v, want ErrNoProof", err)
			}
		})
	}
}

// TestBroken: structural nonsense in a proven format is a FormatError at
// once, not a wait.
func TestBroken(t *testing.T) {
	le := binary.LittleEndian
	loop := genTIFF(tiffSpec{bo: le, pages: 1, pieces: 1})
	first := le.Uint32(loop[4:])
	n := le.Uint16(loop[first:])
	le.PutUint32(loop[int(first)+2+int(n)*12:], first) // next IFD: itself
	for _, tc := range []struct {
		name, file string
		data       []byte
	}{
		{"png bad signature", "a.png", []byte("\x89PNG\r\n\x1a\x0bxxxxxxxxxxxxxxxx")},
		{"png first chunk not IHDR", "a.png", append([]byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x00IEND"), 0, 0, 0, 0)},
		{"jpeg no SOI", "a.jpg", []byte("GIF89a")},
		{"tiff loop", "a.tif", loop},
		{"nifti bad dim0", "a.nii", func() []byte { b := genNIfTI(1, le, []int{2}, 8); le.PutUint16(b[40:], 9); return b }()},
		{"nrrd no magic", "a.nrrd", []byte("NRRX0004\n")},
		{"gzip no magic", "a.nii.gz", []byte("not gzip at all")},
		{"mha data file named", "a.mha", []byte("NDims = 1\nDimSize = 1\nElementType = MET_UCHAR\nElementDataFile = a.raw\n")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fe *FormatError
			if err := check(tc.data, tc.file); !errors.As(err, &fe) {
				t.Errorf("Check = %v, want FormatError", err)
			}
		})
	}
}

func TestMHDDataFile(t *testing.T) {
	hdr := "ObjectType = Image\nNDims = 3\nDimSize = 4 4 2\nElementType = MET_USHORT\nElementNumberOfChannels = 2\nElementDataFile = ct.raw\n"
	h, err := ParseMetaImage(bytes.NewReader([]byte(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Local() || h.DataFile != "ct.raw" || h.DataSize != 4*4*2*2*2 || h.End != int64(len(hdr)) {
		t.Fatalf("header = %+v", h)
	}
	var ie *IncompleteError
	if err := h.CheckData(100); !errors.As(err, &ie) || ie.Want != 128 || ie.Have != 100 {
		t.Errorf("CheckData(100) = %v, want incomplete 128/100", err)
	}
	if err := h.CheckData(128); err != nil {
		t.Errorf("CheckData(128) = %v", err)
	}
	var oe *OverlongError
	if err := h.CheckData(129); !errors.As(err, &oe) {
		t.Errorf("CheckData(129) = %v, want OverlongError", err)
	}
	if err := check([]byte(hdr), "ct.mhd"); err != nil {
		t.Errorf("Check(.mhd with a data file) = %v, want nil (the header is whole)", err)
	}
	if err := check([]byte(hdr[:len(hdr)-3]), "ct.mhd"); !errors.As(err, &ie) {
		t.Errorf("Check(.mhd cut) = %v, want IncompleteError", err)
	}
	if err := CheckMHD(bytes.NewReader([]byte(hdr)), int64(len(hdr)), 120); !errors.As(err, &ie) || ie.Want != 128 {
		t.Errorf("CheckMHD(…, 120) = %v, want incomplete 128/120", err)
	}
	list, err := ParseMetaImage(bytes.NewReader([]byte("NDims = 1\nDimSize = 1\nElementType = MET_UCHAR\nElementDataFile = LIST\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := list.CheckData(1); !errors.Is(err, ErrNoProof) {
		t.Errorf("LIST: CheckData = %v, want ErrNoProof", err)
	}
	// HeaderSize -1: the data is the file's last bytes; longer is fine.
	h2, err := ParseMetaImage(bytes.NewReader([]byte("NDims = 1\nDimSize = 10\nHeaderSize = -1\nElementType = MET_UCHAR\nElementDataFile = d.raw\n")))
	if err != nil {
		t.Fatal(err)
	}
	if err := h2.CheckData(9); !errors.As(err, &ie) || !ie.AtLeast {
		t.Errorf("HeaderSize -1, CheckData(9) = %v, want incomplete, at least", err)
	}
	if err := h2.CheckData(50); err != nil {
		t.Errorf("HeaderSize -1, CheckData(50) = %v", err)
	}
}

// TestTIFFHugeCountsDoNotAllocate: a directory declaring 2^32-1 strips in
// a small file is incomplete, read in chunks, not a 32 GiB allocation.
func TestTIFFHugeCountsDoNotAllocate(t *testing.T) {
	le := binary.LittleEndian
	b := make([]byte, 8+2+2*12+4)
	copy(b, "II*\x00")
	le.PutUint32(b[4:], 8)
	le.PutUint16(b[8:], 2)
	for i, tag := range []uint16{tagStripOffsets, tagStripByteCounts} {
		e := b[10+12*i:]
		le.PutUint16(e, tag)
		le.PutUint16(e[2:], 4)
		le.PutUint32(e[4:], 1<<32-1)
		le.PutUint32(e[8:], 8)
	}
	allocs := testing.AllocsPerRun(5, func() {
		var ie *IncompleteError
		if err := check(b, "x.tif"); !errors.As(err, &ie) {
			t.Fatalf("Check = %v, want IncompleteError", err)
		}
	})
	if allocs > 50 {
		t.Errorf("%v allocations", allocs)
	}
}

// TestCheckGzipTrailer: a .nii.gz is proven by its trailer's size alone.
// A bad CRC passes (Check does not inflate the stream; the server's import
// reports corruption); bytes after the stream, or none, are incomplete.
func TestCheckGzipTrailer(t *testing.T) {
	nii := genNIfTI(1, binary.LittleEndian, []int{20, 20}, 8)
	good := gz(t, nii)
	badCRC := append([]byte(nil), good...)
	badCRC[len(badCRC)-8] ^= 1
	for _, tc := range []struct {
		name string
		data []byte
		ok   bool
	}{
		{"good", good, true},
		{"bad crc", badCRC, true},
		{"garbage after", append(append([]byte(nil), good...), "junk"...), false},
		{"empty", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := check(tc.data, "a.nii.gz")
			var ie *IncompleteError
			switch {
			case tc.ok && err != nil:
				t.Errorf("Check = %v, want nil", err)
			case !tc.ok && !errors.As(err, &ie):
				t.Errorf("Check = %v, want IncompleteError", err)
			}
		})
	}
}

// TestReadErrorsPassThrough: a failing reader is a read error, not a
// verdict on the file.
func TestReadErrorsPassThrough(t *testing.T) {
	boom := errors.New("boom")
	for _, name := range []string{"a.mha", "a.nii", "a.tif", "a.png", "a.jpg", "a.nrrd"} {
		err := Check(failReader{boom}, 1000, name)
		if !errors.Is(err, boom) {
			t.Errorf("%s: Check = %v, want the read error", name, err)
		}
	}
}

type failReader struct{ err error }

func (f failReader) ReadAt(p []byte, off int64) (int, error) { return 0, f.err }

var _ io.ReaderAt = failReader{}

// TestTIFFManySubIFDs: a directory listing thousands of SubIFDs (an array
// larger than one read) is walked in chunks, each one checked.
func TestTIFFManySubIFDs(t *testing.T) {
	le := binary.LittleEndian
	const n = 5000
	b := make([]byte, 8)
	copy(b, "II*\x00")
	arr := len(b)
	for i := 0; i < n; i++ {
		b = le.AppendUint32(b, 0) // the SubIFD offsets, patched below
	}
	ifd := func(sub bool) {
		cnt := 1
		if sub {
			cnt = 2
		}
		b = le.AppendUint16(b, uint16(cnt))
		b = append(b, 0x0e, 0x01, 2, 0, 1, 0, 0, 0, 'x', 0, 0, 0) // ImageDescription "x"
		if sub {
			b = le.AppendUint16(b, tagSubIFDs)
			b = le.AppendUint16(b, 13)
			b = le.AppendUint32(b, n)
			b = le.AppendUint32(b, uint32(arr))
		}
	}
	// n distinct SubIFDs, then the main IFD naming them.
	for i := 0; i < n; i++ {
		start := len(b)
		ifd(false)
		b = le.AppendUint32(b, 0)
		le.PutUint32(b[arr+4*i:], uint32(start))
	}
	main := len(b)
	ifd(true)
	b = le.AppendUint32(b, 0)
	le.PutUint32(b[4:], uint32(main))
	if err := check(b, "x.tif"); err != nil {
		t.Fatalf("Check = %v, want nil", err)
	}
	var ie *IncompleteError
	if err := check(b[:main-3], "x.tif"); !errors.As(err, &ie) {
		t.Fatalf("Check of a cut = %v, want IncompleteError", err)
	}
}
