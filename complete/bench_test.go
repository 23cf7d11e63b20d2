package complete

import (
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// What the proofs cost beside the hash the pipeline computes anyway:
//
//	go test ./complete -run '^$' -bench Hash -benchmem
//
// HashOnly is SHA-256 of a file read from disk (the page cache, after the
// first run); HashWithProof adds Check before the hash, as the pipeline
// does. A .nii.gz is proven by its gzip trailer, not inflated.

func benchFile(b *testing.B, name string, data []byte) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), name)
	if err := os.WriteFile(p, data, 0o644); err != nil {
		b.Fatal(err)
	}
	return p
}

func hashFile(b *testing.B, p string, proof bool, buf []byte, h hash.Hash) {
	f, err := os.Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	h.Reset()
	if proof {
		if err := Check(f, fi.Size(), p); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := io.CopyBuffer(h, io.NewSectionReader(f, 0, fi.Size()), buf); err != nil {
		b.Fatal(err)
	}
	h.Sum(nil)
}

func benchHash(b *testing.B, proof bool) {
	files := []struct {
		name string
		data func() []byte
	}{
		{"ct.mha", func() []byte { return genMHA([]int{512, 512, 1024}, "MET_UCHAR", 1, 1, "") }},
		{"slide.tif", func() []byte {
			return genTIFF(tiffSpec{big: true, bo: binary.LittleEndian, pages: 1, pieces: 4096, tiles: true, pieceSize: 64 << 10})
		}},
		{"brain.nii.gz", func() []byte { return gz(b, smoothNIfTI(256)) }},
	}
	for _, f := range files {
		b.Run(f.name, func(b *testing.B) {
			data := f.data()
			p := benchFile(b, f.name, data)
			b.SetBytes(int64(len(data)))
			data = nil
			buf := make([]byte, 1<<20)
			h := sha256.New()
			b.ResetTimer()
			for b.Loop() {
				hashFile(b, p, proof, buf, h)
			}
		})
	}
}

// BenchmarkCheck is Check alone on the same files: the proof's own cost,
// which the hash comparison above buries in noise.
func BenchmarkCheck(b *testing.B) {
	for _, f := range []struct {
		name string
		data []byte
	}{
		{"ct.mha", genMHA([]int{512, 512, 1024}, "MET_UCHAR", 1, 1, "")},
		{"slide.tif", genTIFF(tiffSpec{big: true, bo: binary.LittleEndian, pages: 1, pieces: 4096, tiles: true, pieceSize: 64 << 10})},
	} {
		b.Run(f.name, func(b *testing.B) {
			p := benchFile(b, f.name, f.data)
			fh, err := os.Open(p)
			if err != nil {
				b.Fatal(err)
			}
			defer fh.Close()
			size := int64(len(f.data))
			for b.Loop() {
				if err := Check(fh, size, p); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkHashOnly(b *testing.B)      { benchHash(b, false) }
func BenchmarkHashWithProof(b *testing.B) { benchHash(b, true) }

// smoothNIfTI is an n³ volume of int16 that compresses about as a scan
// does (smooth, with a little noise), not as random bytes, which gzip
// stores as they are: the .nii.gz is as large as a scan's would be.
func smoothNIfTI(n int) []byte {
	b := genNIfTI(1, binary.LittleEndian, []int{n, n, n}, 16)
	vox := b[352:]
	noise := pattern(len(vox) / 2)
	for i := 0; i < len(vox)/2; i++ {
		x, y, z := i%n, (i/n)%n, i/(n*n)
		v := uint16((x*x+y*y+z*z)/64) + uint16(noise[i]&7)
		binary.LittleEndian.PutUint16(vox[2*i:], v)
	}
	return b
}
