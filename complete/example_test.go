package complete_test

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/gcingest/gcingest/complete"
)

// A MetaImage cut short, as a stalled copy leaves it, is proven
// incomplete from its header alone.
func ExampleCheck() {
	header := "ObjectType = Image\nNDims = 2\nDimSize = 10 10\nElementType = MET_UCHAR\nElementDataFile = LOCAL\n"
	whole := append([]byte(header), make([]byte, 100)...)
	cut := whole[:len(whole)-40]
	fmt.Println(complete.Check(bytes.NewReader(whole), int64(len(whole)), "ct.mha"))
	fmt.Println(complete.Check(bytes.NewReader(cut), int64(len(cut)), "ct.mha"))
	// Output:
	// <nil>
	// incomplete (header says 193 bytes, file has 153)
}

// A .nii.gz is proven complete by its gzip trailer, whose size field must
// match the size the NIfTI header implies; the stream is not inflated past
// that header, and its CRC is not checked. A copy that stops mid-stream
// has no matching trailer at its end.
func ExampleCheck_gzip() {
	// A NIfTI-1 header for a 64×64 image of bytes, then the voxels.
	nii := make([]byte, 352+64*64)
	le := binary.LittleEndian
	le.PutUint32(nii[0:], 348)                     // sizeof_hdr
	le.PutUint16(nii[40:], 2)                      // dim[0]
	le.PutUint16(nii[42:], 64)                     // dim[1]
	le.PutUint16(nii[44:], 64)                     // dim[2]
	le.PutUint16(nii[72:], 8)                      // bitpix
	le.PutUint32(nii[108:], math.Float32bits(352)) // vox_offset
	copy(nii[344:], "n+1\x00")                     // magic
	for i := range nii[352:] {
		nii[352+i] = byte(i * i)
	}
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(nii)
	zw.Close()
	whole := b.Bytes()
	cut := whole[:len(whole)-100]

	fmt.Println(complete.Check(bytes.NewReader(whole), int64(len(whole)), "brain.nii.gz"))
	var ie *complete.IncompleteError
	err := complete.Check(bytes.NewReader(cut), int64(len(cut)), "brain.nii.gz")
	fmt.Println(errors.As(err, &ie))
	// Output:
	// <nil>
	// true
}
