package main

import (
	"bytes"
	"compress/gzip"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// TestE2EStalledHalfWrittenImagesLandWhole: a scanner or a share that
// stalls mid-file for longer than settle. Each image of a format whose
// header proves its size stays half-written for 4 × settle; the agent
// sends none of them, plan shows each as incomplete, and once the rest
// arrives each lands once, whole.
func TestE2EStalledHalfWrittenImagesLandWhole(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end process test; runs without -short")
	}
	e := newE2E(t, gcapitest.Options{Seed: 41}, "")
	mhd, raw := gcapitest.SampleMHDPair(7, 32, 32, 8, "pair.raw")
	images := map[string][]byte{
		"a/ct.mha":    gcapitest.SampleMHA(1, 64, 64, 16),
		"b/ct.nii":    gcapitest.SampleNIfTI(2, 64, 64, 16),
		"c/ct.nii.gz": gzipped(t, gcapitest.SampleNIfTI(3, 64, 64, 16)),
		"d/slide.tif": gcapitest.SampleTIFF(4, 256, 256),
		"e/photo.png": pngImage(t, 200, 150),
		"f/photo.jpg": jpegImage(t, 200, 150),
		"g/pair.raw":  raw,
		"g/pair.mhd":  mhd,
	}
	write := func(rel string, b []byte) {
		t.Helper()
		p := filepath.Join(e.drop, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := e.start()
	defer e.stop(cmd)
	// The first part of each file (the .mhd header whole, its data half).
	for rel, b := range images {
		if strings.HasSuffix(rel, ".mhd") {
			write(rel, b)
			continue
		}
		write(rel, b[:len(b)/2])
	}
	const settle, rescan = 200 * time.Millisecond, time.Second // newE2E's
	stalled := time.Now()
	waitFor(t, time.Minute, "the half-written images to stall for 4 × settle, shown incomplete by plan", func() bool {
		if time.Since(stalled) < 4*settle+2*rescan {
			return false
		}
		return strings.Count(runOut(t, "plan", "--config", e.config), "incomplete") >= len(images)-1
	}, func() string { return runOut(t, "plan", "--config", e.config) + e.logTail() })
	if items := e.srv.Items(e.archive); len(items) != 0 {
		t.Fatalf("%d items in the archive while every image was half-written; want none", len(items))
	}
	if n := e.srv.Stats().PartBytes; n != 0 {
		t.Fatalf("%d bytes uploaded while every image was half-written; want none", n)
	}

	for rel, b := range images {
		write(rel, b)
	}
	waitFor(t, time.Minute, "every image in the archive", func() bool {
		return countFiles(e.done) == len(images)
	}, e.logTail)
	items := e.srv.Items(e.archive)
	if len(items) != len(images)-1 {
		t.Fatalf("archive holds %d items; want %d, one per image", len(items), len(images)-1)
	}
	for _, it := range items {
		v := it.Value(e2eInterface)
		if v == nil || v.Image == nil {
			t.Fatalf("item %q has no image", it.Title)
		}
		pk := strings.TrimSuffix(*v.Image, "/")
		content, err := e.srv.ImageContent(pk[strings.LastIndexByte(pk, '/')+1:])
		if err != nil {
			t.Fatal(err)
		}
		rel := it.Title[:strings.LastIndex(it.Title, " [")]
		want := images[rel]
		if strings.HasSuffix(rel, ".mhd") {
			want = raw // the data file, whole, beside the header
		}
		if !bytes.Contains(content, want) {
			t.Errorf("item %q: the image does not hold the whole of %s (%d bytes stored)", it.Title, rel, len(content))
		}
	}
}

func gzipped(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testPicture(w, h int) image.Image {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x ^ y), 255})
		}
	}
	return img
}

func pngImage(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := png.Encode(&buf, testPicture(w, h)); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func jpegImage(t *testing.T, w, h int) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, testPicture(w, h), &jpeg.Options{Quality: 90}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
