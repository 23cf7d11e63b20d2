package complete

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"math"
	"strings"
	"testing"
)

// Generators of small, valid files of every format with a proof. They are
// written from the format descriptions, not copied from other files.

// genMHA is a MetaImage with LOCAL data; extra lines go before
// ElementDataFile.
func genMHA(dims []int, elemType string, elemSize, channels int, extra string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "ObjectType = Image\nNDims = %d\nBinaryData = True\nBinaryDataByteOrderMSB = False\n", len(dims))
	b.WriteString("DimSize =")
	n := elemSize * channels
	for _, d := range dims {
		fmt.Fprintf(&b, " %d", d)
		n *= d
	}
	fmt.Fprintf(&b, "\nElementType = %s\n", elemType)
	if channels != 1 {
		fmt.Fprintf(&b, "ElementNumberOfChannels = %d\n", channels)
	}
	b.WriteString(extra)
	b.WriteString("ElementDataFile = LOCAL\n")
	return append([]byte(b.String()), pattern(n)...)
}

// pattern is n bytes of varied data (so that gzip does not shrink it to
// nothing).
func pattern(n int) []byte {
	p := make([]byte, n)
	x := uint32(2463534242)
	for i := range p {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		p[i] = byte(x)
	}
	return p
}

// genNIfTI is a single-file NIfTI-1 or -2 image in byte order bo.
func genNIfTI(version int, bo binary.ByteOrder, dims []int, bitpix int) []byte {
	n := bitpix
	for _, d := range dims {
		n *= d
	}
	n = (n + 7) / 8
	var hdr []byte
	if version == 1 {
		hdr = make([]byte, 352)
		bo.PutUint32(hdr[0:], 348)
		bo.PutUint16(hdr[40:], uint16(len(dims)))
		for i, d := range dims {
			bo.PutUint16(hdr[42+2*i:], uint16(d))
		}
		bo.PutUint16(hdr[70:], 2)
		bo.PutUint16(hdr[72:], uint16(bitpix))
		bo.PutUint32(hdr[108:], math.Float32bits(352))
		copy(hdr[344:], "n+1\x00")
	} else {
		hdr = make([]byte, 544)
		bo.PutUint32(hdr[0:], 540)
		copy(hdr[4:], "n+2\x00\r\n\x1a\n")
		bo.PutUint16(hdr[12:], 2)
		bo.PutUint16(hdr[14:], uint16(bitpix))
		bo.PutUint64(hdr[16:], uint64(len(dims)))
		for i, d := range dims {
			bo.PutUint64(hdr[24+8*i:], uint64(d))
		}
		bo.PutUint64(hdr[168:], 544)
	}
	return append(hdr, pattern(n)...)
}

func gz(t testing.TB, b []byte) []byte {
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

// genNRRD is an NRRD with attached data in encoding raw or gzip.
func genNRRD(t testing.TB, encoding string, sizes []int, typ string, typeSize int) []byte {
	n := typeSize
	s := make([]string, len(sizes))
	for i, d := range sizes {
		n *= d
		s[i] = fmt.Sprint(d)
	}
	hdr := fmt.Sprintf("NRRD0004\n# made by a test\ntype: %s\ndimension: %d\nsizes: %s\nendian: little\nencoding: %s\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n\n",
		typ, len(sizes), strings.Join(s, " "), encoding)
	data := pattern(n)
	if encoding == "gzip" {
		data = gz(t, data)
	}
	return append([]byte(hdr), data...)
}

// tiffSpec describes a TIFF to generate: pages of strips or tiles, in
// either byte order, classic or BigTIFF, optionally with a SubIFD page.
type tiffSpec struct {
	big    bool
	bo     binary.ByteOrder
	pages  int
	pieces int  // strips or tiles per page
	tiles  bool // TileOffsets/TileByteCounts instead of strips
	subIFD bool // the first page has one SubIFD (a reduced image)
	// pieceSize, when set, is every strip's or tile's size (for
	// benchmarks); otherwise they vary.
	pieceSize int
}

type tiffEnt struct {
	tag, typ uint16
	vals     []uint64
}

// genTIFF lays out a file as copying tools meet it: header, pixel data,
// then the directories (and their arrays) at the end.
func genTIFF(s tiffSpec) []byte {
	bo := s.bo
	var b bytes.Buffer
	hdrLen := 8
	if s.big {
		hdrLen = 16
	}
	b.Write(make([]byte, hdrLen))
	type page struct {
		offs, counts []uint64
	}
	var shared []byte
	mk := func() page {
		var p page
		for i := 0; i < s.pieces; i++ {
			var d []byte
			if s.pieceSize > 0 {
				if shared == nil {
					shared = pattern(s.pieceSize)
				}
				d = shared
			} else {
				d = pattern(100 + 37*i)
			}
			p.offs = append(p.offs, uint64(b.Len()))
			p.counts = append(p.counts, uint64(len(d)))
			b.Write(d)
		}
		return p
	}
	var pages []page
	for i := 0; i < s.pages; i++ {
		pages = append(pages, mk())
	}
	var sub page
	if s.subIFD {
		sub = mk()
	}
	offTyp := uint16(4)
	if s.big {
		offTyp = 16
	}
	ents := func(p page, subOff uint64) []tiffEnt {
		es := []tiffEnt{
			{256, 3, []uint64{64}}, {257, 3, []uint64{64}}, {258, 3, []uint64{8}},
			{259, 3, []uint64{1}}, {262, 3, []uint64{1}},
			{270, 2, asciiVals("a page made by a test\x00")},
		}
		if s.tiles {
			es = append(es, tiffEnt{322, 3, []uint64{16}}, tiffEnt{323, 3, []uint64{16}},
				tiffEnt{tagTileOffsets, offTyp, p.offs}, tiffEnt{tagTileByteCounts, offTyp, p.counts})
		} else {
			es = append(es, tiffEnt{tagStripOffsets, offTyp, p.offs}, tiffEnt{277, 3, []uint64{1}},
				tiffEnt{278, 3, []uint64{1}}, tiffEnt{tagStripByteCounts, offTyp, p.counts})
		}
		if subOff != 0 {
			es = append(es, tiffEnt{tagSubIFDs, offTyp, []uint64{subOff}})
		}
		return es
	}
	// writeIFD writes one directory, its arrays first, and returns its
	// offset and where its next-IFD field is.
	put := func(v uint64, size int) {
		switch size {
		case 1:
			b.WriteByte(byte(v))
		case 2:
			binary.Write(&b, bo, uint16(v))
		case 4:
			binary.Write(&b, bo, uint32(v))
		case 8:
			binary.Write(&b, bo, v)
		}
	}
	inline := 4
	if s.big {
		inline = 8
	}
	writeIFD := func(es []tiffEnt) (off, nextAt int) {
		arrays := make([]uint64, len(es))
		for i, e := range es {
			ts := int(tiffTypeSize(e.typ))
			if ts*len(e.vals) > inline {
				if b.Len()%2 == 1 {
					b.WriteByte(0)
				}
				arrays[i] = uint64(b.Len())
				for _, v := range e.vals {
					put(v, ts)
				}
			}
		}
		if b.Len()%2 == 1 {
			b.WriteByte(0)
		}
		off = b.Len()
		if s.big {
			put(uint64(len(es)), 8)
		} else {
			put(uint64(len(es)), 2)
		}
		for i, e := range es {
			ts := int(tiffTypeSize(e.typ))
			put(uint64(e.tag), 2)
			put(uint64(e.typ), 2)
			put(uint64(len(e.vals)), inline)
			if arrays[i] != 0 {
				put(arrays[i], inline)
				continue
			}
			n := 0
			for _, v := range e.vals {
				put(v, ts)
				n += ts
			}
			b.Write(make([]byte, inline-n))
		}
		nextAt = b.Len()
		put(0, inline)
		return off, nextAt
	}
	var subOff uint64
	if s.subIFD {
		o, _ := writeIFD(ents(sub, 0))
		subOff = uint64(o)
	}
	var first int
	prevNext := -1
	for i, p := range pages {
		so := uint64(0)
		if i == 0 {
			so = subOff
		}
		off, nextAt := writeIFD(ents(p, so))
		if prevNext < 0 {
			first = off
		} else {
			patch(b.Bytes()[prevNext:], uint64(off), inline, bo)
		}
		prevNext = nextAt
	}
	out := b.Bytes()
	if s.big {
		copy(out, map[bool]string{true: "II", false: "MM"}[bo == binary.LittleEndian])
		bo.PutUint16(out[2:], 43)
		bo.PutUint16(out[4:], 8)
		bo.PutUint64(out[8:], uint64(first))
	} else {
		copy(out, map[bool]string{true: "II", false: "MM"}[bo == binary.LittleEndian])
		bo.PutUint16(out[2:], 42)
		bo.PutUint32(out[4:], uint32(first))
	}
	return out
}

func patch(b []byte, v uint64, size int, bo binary.ByteOrder) {
	if size == 8 {
		bo.PutUint64(b, v)
	} else {
		bo.PutUint32(b, uint32(v))
	}
}

func asciiVals(s string) []uint64 {
	out := make([]uint64, len(s))
	for i := range s {
		out[i] = uint64(s[i])
	}
	return out
}

func testImage(w, h int) image.Image {
	m := image.NewRGBA(image.Rect(0, 0, w, h))
	p := pattern(w * h * 3)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			i := 3 * (y*w + x)
			m.Set(x, y, color.RGBA{p[i], p[i+1], p[i+2], 255})
		}
	}
	return m
}

func genPNG(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, testImage(w, h)); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func genJPEG(t testing.TB, w, h int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, testImage(w, h), &jpeg.Options{Quality: 80}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}
