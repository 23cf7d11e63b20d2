package group

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"image"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/watch"
)

// Small valid files of each format with a completeness proof, for the
// grouper's tests (package complete has its own, more varied ones).

// mhaBytes is a MetaImage of dims (x y z) unsigned bytes, data LOCAL.
func mhaBytes(x, y, z int) []byte {
	dims := strconv.Itoa(x) + " " + strconv.Itoa(y) + " " + strconv.Itoa(z)
	return append(mhdText(dims, "MET_UCHAR", "LOCAL", ""), make([]byte, x*y*z)...)
}

// niftiBytes is a NIfTI-1 image of n unsigned bytes.
func niftiBytes(n int) []byte {
	le := binary.LittleEndian
	h := make([]byte, 352, 352+n)
	le.PutUint32(h, 348)
	le.PutUint16(h[40:], 1)
	le.PutUint16(h[42:], uint16(n))
	le.PutUint16(h[70:], 2)
	le.PutUint16(h[72:], 8)
	le.PutUint32(h[108:], math.Float32bits(352))
	copy(h[344:], "n+1\x00")
	return append(h, make([]byte, n)...)
}

func gzipBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func nrrdBytes(n int) []byte {
	return append([]byte("NRRD0004\ntype: uchar\ndimension: 1\nsizes: "+strconv.Itoa(n)+"\nencoding: raw\n\n"), make([]byte, n)...)
}

// tiffBytes is a one-strip TIFF with its directory at the end, as a copy
// of a file libtiff wrote meets the drop folder.
func tiffBytes(n int) []byte {
	le := binary.LittleEndian
	b := make([]byte, 8+n)
	copy(b, "II*\x00")
	ifd := uint32(len(b))
	le.PutUint32(b[4:], ifd)
	ents := [][3]uint32{{256, 4, uint32(n)}, {257, 4, 1}, {258, 3, 8}, {262, 3, 1}, {273, 4, 8}, {278, 4, 1}, {279, 4, uint32(n)}}
	b = le.AppendUint16(b, uint16(len(ents)))
	for _, e := range ents {
		b = le.AppendUint16(b, uint16(e[0]))
		b = le.AppendUint16(b, uint16(e[1]))
		b = le.AppendUint32(b, 1)
		if e[1] == 3 {
			b = le.AppendUint16(b, uint16(e[2]))
			b = le.AppendUint16(b, 0)
		} else {
			b = le.AppendUint32(b, e[2])
		}
	}
	return le.AppendUint32(b, 0)
}

func pngBytes(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, image.NewGray(image.Rect(0, 0, 30, 20))); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 30, 20)), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestHalfWrittenWaitsPastSettle: a file of each proven format, cut and
// then left unchanged far beyond settle, is not ready; its reason names
// the file and both sizes (or what is missing); when the rest arrives it is
// ready; and one that stays cut goes on after IncompleteWait, to fail in
// the pipeline.
func TestHalfWrittenWaitsPastSettle(t *testing.T) {
	cases := []struct {
		name   string
		data   []byte
		cut    int
		reason string
	}{
		{"ct.mha", mhaBytes(10, 10, 10), -400, "incomplete: ct.mha (header says %W bytes, file has %H)"},
		{"brain.nii", niftiBytes(2000), -1000, "incomplete: brain.nii (header says %W bytes, file has %H)"},
		{"brain.nii.gz", gzipBytes(t, niftiBytes(5000)), -10, "incomplete: brain.nii.gz (file has %H bytes): gzip trailer says"},
		{"seg.nrrd", nrrdBytes(3000), -1, "incomplete: seg.nrrd (header says %W bytes, file has %H)"},
		{"slide.tif", tiffBytes(4000), 2000, "incomplete: slide.tif (header says at least"},
		{"photo.png", pngBytes(t), -1, "incomplete: photo.png (header says %W bytes, file has %H)"},
		{"photo.jpg", jpegBytes(t), -1, "incomplete: photo.jpg (file has %H bytes): no EOI marker at its end"},
		{"hdr.mhd", mhdText("4 4 2", "MET_SHORT", "hdr.raw", ""), -5, "incomplete: hdr.mhd (file has %H bytes)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cut := tc.cut
			if cut < 0 {
				cut += len(tc.data)
			}
			want := strings.NewReplacer("%W", strconv.Itoa(len(tc.data)), "%H", strconv.Itoa(cut)).Replace(tc.reason)
			for _, mode := range []watch.Group{watch.GroupAuto, watch.GroupFile} {
				tr := newTree(t)
				g := NewGrouper(tr.watch(mode), nil)
				tr.write(tc.name, tc.data[:cut])
				tr.scan(g, t0)
				for _, now := range []time.Time{t0.Add(testSettle), t0.Add(10 * testSettle), t0.Add(59 * time.Minute)} {
					tr.scan(g, now)
					if got := g.Ready(now); len(got) != 0 {
						t.Fatalf("%s: ready %v after the cut although the header says it is not complete: %v", mode, now.Sub(t0), describe(got))
					}
					if got := describeWaiting(g.Waiting(now))[tc.name]; !strings.HasPrefix(got, want) {
						t.Fatalf("%s: waiting reason %q, want it to start %q", mode, got, want)
					}
				}
				if wake := g.NextWake(); !wake.Equal(t0.Add(DefaultIncompleteWait)) {
					t.Errorf("%s: NextWake = %v, want the end of IncompleteWait %v", mode, wake, t0.Add(DefaultIncompleteWait))
				}
				tr.appendTo(tc.name, tc.data[cut:])
				if tc.name == "hdr.mhd" { // complete now, its data file is what it waits for
					tr.write("hdr.raw", make([]byte, 64))
				}
				done := t0.Add(time.Hour + time.Minute)
				tr.scan(g, done)
				got := g.Ready(done.Add(testSettle))
				if !slices.ContainsFunc(got, func(gr Group) bool { return gr.Key == tc.name }) {
					t.Fatalf("%s: ready once complete = %v, want %s", mode, describe(got), tc.name)
				}
			}
		})
	}
}

// TestStaysCutGoesOnAfterIncompleteWait: a file that stays cut is returned
// once IncompleteWait has passed since its last change (so that the
// pipeline fails it, naming the file), not before.
func TestStaysCutGoesOnAfterIncompleteWait(t *testing.T) {
	for _, mode := range []watch.Group{watch.GroupAuto, watch.GroupFile, watch.GroupFolder} {
		t.Run(string(mode), func(t *testing.T) {
			tr := newTree(t)
			w := tr.watch(mode)
			w.IncompleteWait = 5 * time.Minute
			g := NewGrouper(w, nil)
			rel := "ct.mha"
			if mode == watch.GroupFolder {
				rel = "case1/ct.mha"
			}
			full := mhaBytes(8, 8, 8)
			tr.write(rel, full[:len(full)-100])
			tr.scan(g, t0)
			before := t0.Add(5*time.Minute - time.Second)
			tr.scan(g, before)
			if got := g.Ready(before); len(got) != 0 {
				t.Fatalf("ready before IncompleteWait: %v", describe(got))
			}
			key := rel
			if mode == watch.GroupFolder {
				key = "case1"
			}
			if r := describeWaiting(g.Waiting(before))[key]; !strings.Contains(r, "incomplete: ct.mha (header says") {
				t.Errorf("waiting reason %q", r)
			}
			after := t0.Add(5 * time.Minute)
			tr.scan(g, after)
			if got := describe(g.Ready(after)); len(got) != 1 || !strings.HasPrefix(got[0], key+" ") {
				t.Fatalf("ready after IncompleteWait = %q, want %s", got, key)
			}
		})
	}
}

// TestOverlongAndBrokenDoNotWait: a file longer than its header says, or
// broken, goes on after settle (to fail in the pipeline with the reason):
// waiting cannot mend it.
func TestOverlongAndBrokenDoNotWait(t *testing.T) {
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("long.mha", append(mhaBytes(4, 4, 4), 0))
	tr.write("broken.png", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\x00JUNK\x00\x00\x00\x00"))
	tr.write("notnifti.nii", bytes.Repeat([]byte{7}, 400))
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	got := describe(g.Ready(t0.Add(testSettle)))
	want := []string{"broken.png single broken.png", "long.mha single long.mha", "notnifti.nii single notnifti.nii"}
	if !slices.Equal(got, want) {
		t.Fatalf("ready = %q, want %q", got, want)
	}
}

// TestMHDDataFileCut: the data file of an .mhd pair, cut, holds the pair
// back naming the data file and both sizes, until the rest arrives; in
// folder mode too.
func TestMHDDataFileCut(t *testing.T) {
	for _, mode := range []watch.Group{watch.GroupAuto, watch.GroupFolder} {
		t.Run(string(mode), func(t *testing.T) {
			tr := newTree(t)
			g := NewGrouper(tr.watch(mode), nil)
			dir := ""
			key := "ct.mhd"
			if mode == watch.GroupFolder {
				dir, key = "case1/", "case1"
			}
			tr.write(dir+"ct.mhd", mhdText("4 4 2", "MET_SHORT", "ct.raw", ""))
			tr.write(dir+"ct.raw", make([]byte, 40))
			tr.scan(g, t0)
			later := t0.Add(30 * time.Minute)
			tr.scan(g, later)
			if got := g.Ready(later); len(got) != 0 {
				t.Fatalf("ready with the data file cut: %v", describe(got))
			}
			if r, want := describeWaiting(g.Waiting(later))[key], "incomplete: ct.raw (header says 64 bytes, file has 40)"; r != want {
				t.Errorf("waiting reason %q, want %q", r, want)
			}
			tr.appendTo(dir+"ct.raw", make([]byte, 24))
			tr.scan(g, later.Add(time.Second))
			done := later.Add(time.Second + testSettle)
			tr.scan(g, done)
			if got := g.Ready(done); len(got) != 1 || got[0].Key != key {
				t.Fatalf("ready = %v, want %s", describe(got), key)
			}
		})
	}
}

func TestIncompleteWaitDefaults(t *testing.T) {
	for _, tc := range []struct {
		settle, wait, want time.Duration
	}{
		{10 * time.Second, 0, DefaultIncompleteWait},
		{30 * time.Minute, 0, 2 * time.Hour},
		{10 * time.Second, 5 * time.Minute, 5 * time.Minute},
		{10 * time.Minute, time.Minute, 10 * time.Minute},
	} {
		g := NewGrouper(watch.Spec{Path: "/d", Settle: tc.settle, IncompleteWait: tc.wait}, nil)
		if got := g.incompleteWait(); got != tc.want {
			t.Errorf("settle %v, IncompleteWait %v: got %v, want %v", tc.settle, tc.wait, got, tc.want)
		}
	}
}

// TestUnreadableImageGoesOn: an image whose proof cannot be read (no
// permission) is not held back: after settle it goes on, to fail in the
// pipeline naming the file, as before proofs.
func TestUnreadableImageGoesOn(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	tr := newTree(t)
	g := NewGrouper(tr.watch("auto"), nil)
	tr.write("locked.mha", mhaBytes(4, 4, 4)[:50])
	if err := os.Chmod(tr.abs("locked.mha"), 0); err != nil {
		t.Fatal(err)
	}
	tr.scan(g, t0)
	tr.scan(g, t0.Add(testSettle))
	if got := describe(g.Ready(t0.Add(testSettle))); !slices.Equal(got, []string{"locked.mha single locked.mha"}) {
		t.Fatalf("ready = %q, want locked.mha", got)
	}
}
