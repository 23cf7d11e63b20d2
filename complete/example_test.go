package complete_test

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"fmt"
	"io"

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

// The hash step feeds the bytes it hashes to the verifier too, and asks
// for the verdict at the end.
func ExampleNewStreamVerifier() {
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write([]byte("not a NIfTI header"))
	zw.Close()
	data := b.Bytes()

	h := sha256.New()
	v := complete.NewStreamVerifier("brain.nii.gz", int64(len(data)))
	io.Copy(io.MultiWriter(h, v), bytes.NewReader(data))
	fmt.Println(v.Close())
	// Output:
	// not a valid NIfTI file: no NIfTI-1 or NIfTI-2 sizeof_hdr at the start
}
