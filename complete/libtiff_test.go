package complete

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLibTIFFFiles runs the TIFF proof on files written by an independent
// writer, libtiff's tiffcp (Debian's libtiff-tools): strips, tiles, BigTIFF,
// big-endian, compressed, several pages. Each passes whole and is
// incomplete cut anywhere. It also has tiffinfo read this package's own
// generated TIFFs, so that the generator the other tests use is TIFF.
// Skipped when the tools are missing, except under CI.
func TestLibTIFFFiles(t *testing.T) {
	tiffcp, err := exec.LookPath("tiffcp")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("tiffcp not found (apt-get install libtiff-tools)")
		}
		t.Skip("tiffcp not found (apt-get install libtiff-tools)")
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "src.tif")
	if err := os.WriteFile(src, plainTIFF(96, 80), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"strips", []string{"-s", "-r", "4"}},
		{"tiles", []string{"-t", "-w", "16", "-l", "16"}},
		{"bigtiff tiles", []string{"-8", "-t", "-w", "32", "-l", "32"}},
		{"big-endian lzw", []string{"-B", "-c", "lzw", "-r", "8"}},
		{"zip pages", []string{"-c", "zip", "-r", "16", src, src}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".tif")
			args := append(append([]string(nil), tc.args...), src, out)
			if msg, err := exec.Command(tiffcp, args...).CombinedOutput(); err != nil {
				t.Fatalf("tiffcp %v: %v\n%s", args, err, msg)
			}
			data, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			if err := check(data, "x.tif"); err != nil {
				t.Fatalf("Check = %v, want nil", err)
			}
			for _, cut := range []int{3, 7, 8, 15, 200, len(data) / 3, len(data) / 2, len(data) - 1} {
				var ie *IncompleteError
				if err := check(data[:cut], "x.tif"); !errors.As(err, &ie) {
					t.Errorf("cut at %d of %d: Check = %v, want IncompleteError", cut, len(data), err)
				}
			}
		})
	}
	tiffinfo, err := exec.LookPath("tiffinfo")
	if err != nil {
		t.Skip("tiffinfo not found")
	}
	for i, s := range samples(t) {
		if !strings.Contains(s.name, "tiff") {
			continue
		}
		p := filepath.Join(dir, "gen"+string(rune('a'+i))+".tif")
		if err := os.WriteFile(p, s.data, 0o644); err != nil {
			t.Fatal(err)
		}
		msg, err := exec.Command(tiffinfo, p).CombinedOutput()
		if err != nil || strings.Contains(string(msg), "Error") {
			t.Errorf("tiffinfo on the generated %s: %v\n%s", s.name, err, msg)
		}
	}
}

// plainTIFF is a baseline greyscale TIFF of one strip, for tiffcp to
// rewrite.
func plainTIFF(w, h int) []byte {
	le := binary.LittleEndian
	b := append([]byte("II*\x00\x00\x00\x00\x00"), pattern(w*h)...)
	le.PutUint32(b[4:], uint32(len(b)))
	ents := [][3]uint32{{256, 4, uint32(w)}, {257, 4, uint32(h)}, {258, 3, 8}, {259, 3, 1}, {262, 3, 1},
		{273, 4, 8}, {277, 3, 1}, {278, 4, uint32(h)}, {279, 4, uint32(w * h)}}
	b = le.AppendUint16(b, uint16(len(ents)))
	for _, e := range ents {
		b = le.AppendUint16(b, uint16(e[0]))
		b = le.AppendUint16(b, uint16(e[1]))
		b = le.AppendUint32(b, 1)
		b = le.AppendUint32(b, e[2]) // a SHORT is left-justified, which in LE is the same bytes
	}
	return le.AppendUint32(b, 0)
}
