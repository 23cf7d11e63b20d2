package complete

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// TIFF and BigTIFF: a file is complete when everything its directories
// reference lies inside it: every IFD of the chain and of SubIFDs, every
// out-of-line tag value, every strip and tile. A file longer than what it
// references is fine (writers leave free space). Whole-slide formats built
// on TIFF (.svs, .scn, .bif, .ndpi below 4 GiB) get the same proof, but
// what only looks odd to us there is no proof rather than a failure: their
// writers bend TIFF's rules, and the server's readers accept them.

const (
	maxTIFFIFDs     = 1 << 16 // directories followed in one file
	maxBigTIFFCount = 1 << 20 // entries in one BigTIFF directory
	tiffChunk       = 1024    // array elements read at a time
	// maxTIFFWork bounds the entries and array elements looked at in one
	// file: directories may share their bytes, so the file's size alone
	// does not bound the walk. Real pyramids stay far below it.
	maxTIFFWork = 1 << 26
)

// TIFF tags that point at data.
const (
	tagStripOffsets    = 273
	tagStripByteCounts = 279
	tagTileOffsets     = 324
	tagTileByteCounts  = 325
	tagSubIFDs         = 330
)

func tiffTypeSize(t uint16) int64 {
	switch t {
	case 1, 2, 6, 7: // BYTE ASCII SBYTE UNDEFINED
		return 1
	case 3, 8: // SHORT SSHORT
		return 2
	case 4, 9, 11, 13: // LONG SLONG FLOAT IFD
		return 4
	case 5, 10, 12, 16, 17, 18: // RATIONAL SRATIONAL DOUBLE LONG8 SLONG8 IFD8
		return 8
	}
	return 0 // unknown: readers skip the entry, and so do we
}

type tiffEntry struct {
	typ   uint16
	count uint64
	field [8]byte // the value (inline) or its offset
	set   bool
}

type tiffWalk struct {
	r       io.ReaderAt
	size    int64
	bo      binary.ByteOrder
	big     bool
	want    int64 // the end of the furthest byte referenced
	atLeast bool  // something beyond the end could not be followed
	buf     []byte
	work    int64 // entries and array elements looked at so far
}

var errTIFFWork = fmt.Errorf("TIFF structure too large to walk: %w", ErrNoProof)

// spend counts n units of work against maxTIFFWork.
func (w *tiffWalk) spend(n int64) error {
	if w.work += n; w.work > maxTIFFWork {
		return errTIFFWork
	}
	return nil
}

// need records that bytes up to end are referenced, and reports whether
// they are inside the file.
func (w *tiffWalk) need(end int64) bool {
	if end > w.want {
		w.want = end
	}
	return end <= w.size
}

func (w *tiffWalk) offset(b []byte) int64 {
	if w.big {
		v := w.bo.Uint64(b)
		if v > 1<<62 {
			return 1 << 62
		}
		return int64(v)
	}
	return int64(w.bo.Uint32(b))
}

var tiffMagics = [][]byte{[]byte("II*\x00"), []byte("MM\x00*"), []byte("II+\x00"), []byte("MM\x00+")}

func checkTIFF(r io.ReaderAt, size int64, wsi bool) error {
	err := walkTIFF(r, size)
	var fe *FormatError
	if wsi && errors.As(err, &fe) {
		return fmt.Errorf("%s: %w", fe.Msg, ErrNoProof)
	}
	return err
}

func walkTIFF(r io.ReaderAt, size int64) error {
	var head [16]byte
	n, err := r.ReadAt(head[:], 0)
	if n < 16 && err != nil && err != io.EOF {
		return fmt.Errorf("read TIFF header: %w", err)
	}
	w := &tiffWalk{r: r, size: size}
	switch {
	case n < 4:
		if isPrefixOfAny(head[:n], tiffMagics...) {
			return &IncompleteError{Want: -1, Have: size}
		}
		return formatErr("TIFF", "no TIFF byte-order mark")
	case head[0] == 'I' && head[1] == 'I':
		w.bo = binary.LittleEndian
	case head[0] == 'M' && head[1] == 'M':
		w.bo = binary.BigEndian
	default:
		return formatErr("TIFF", "no TIFF byte-order mark")
	}
	switch w.bo.Uint16(head[2:]) {
	case 42:
	case 43:
		w.big = true
	default:
		return formatErr("TIFF", "no TIFF version 42 or 43")
	}
	var first int64
	if w.big {
		if n < 16 {
			return &IncompleteError{Want: -1, Have: size}
		}
		if w.bo.Uint16(head[4:]) != 8 || w.bo.Uint16(head[6:]) != 0 {
			return formatErr("BigTIFF", "offset size is not 8")
		}
		first = w.offset(head[8:])
	} else {
		if n < 8 {
			return &IncompleteError{Want: -1, Have: size}
		}
		first = w.offset(head[4:])
	}
	if first == 0 {
		// libtiff writes the header first and links the directory last.
		return &IncompleteError{Want: -1, Have: size, Detail: "no image directory yet"}
	}
	w.buf = make([]byte, tiffChunk*8)
	queue := []int64{first}
	seen := make(map[int64]bool)
	for len(queue) > 0 {
		off := queue[len(queue)-1]
		queue = queue[:len(queue)-1]
		if seen[off] {
			return formatErr("TIFF", "directory at %d is reached twice (a loop)", off)
		}
		if len(seen) >= maxTIFFIFDs {
			return formatErr("TIFF", "more than %d directories", maxTIFFIFDs)
		}
		seen[off] = true
		next, subs, err := w.ifd(off)
		if err != nil {
			return err
		}
		if next != 0 {
			queue = append(queue, next)
		}
		for _, s := range subs {
			if len(queue) > maxTIFFIFDs {
				return formatErr("TIFF", "more than %d directories", maxTIFFIFDs)
			}
			queue = append(queue, s)
		}
	}
	if w.want > size {
		return &IncompleteError{Want: w.want, AtLeast: w.atLeast, Have: size}
	}
	return nil
}

// ifd checks the directory at off and what it references, and returns the
// next directory's offset and its SubIFDs. A directory beyond the end is
// recorded (need) and not followed.
func (w *tiffWalk) ifd(off int64) (next int64, subs []int64, err error) {
	countSize, entSize, offSize := int64(2), int64(12), int64(4)
	if w.big {
		countSize, entSize, offSize = 8, 20, 8
	}
	if !w.need(off + countSize) {
		w.atLeast = true
		return 0, nil, nil
	}
	var cb [8]byte
	if err := readFull(w.r, cb[:countSize], off); err != nil {
		return 0, nil, fmt.Errorf("read TIFF directory at %d: %w", off, err)
	}
	var count int64
	if w.big {
		c := w.bo.Uint64(cb[:])
		if c > maxBigTIFFCount {
			return 0, nil, formatErr("BigTIFF", "directory at %d has %d entries", off, c)
		}
		count = int64(c)
	} else {
		count = int64(w.bo.Uint16(cb[:]))
	}
	if count == 0 {
		return 0, nil, formatErr("TIFF", "directory at %d has no entries", off)
	}
	if err := w.spend(count); err != nil {
		return 0, nil, err
	}
	end := off + countSize + count*entSize + offSize
	if !w.need(end) {
		w.atLeast = true
		return 0, nil, nil
	}
	var data [5]tiffEntry // StripOffsets, StripByteCounts, TileOffsets, TileByteCounts, SubIFDs
	inline := offSize
	for i := int64(0); i < count; i += tiffChunk / 4 {
		k := min(count-i, tiffChunk/4)
		b := w.buf[:k*entSize]
		if err := readFull(w.r, b, off+countSize+i*entSize); err != nil {
			return 0, nil, fmt.Errorf("read TIFF directory at %d: %w", off, err)
		}
		for j := int64(0); j < k; j++ {
			e := b[j*entSize : (j+1)*entSize]
			tag, typ := w.bo.Uint16(e), w.bo.Uint16(e[2:])
			var cnt uint64
			var field []byte
			if w.big {
				cnt, field = w.bo.Uint64(e[4:]), e[12:20]
			} else {
				cnt, field = uint64(w.bo.Uint32(e[4:])), e[8:12]
			}
			ts := tiffTypeSize(typ)
			if ts == 0 {
				continue
			}
			if cnt > uint64(1<<62)/uint64(ts) {
				return 0, nil, formatErr("TIFF", "tag %d declares %d values", tag, cnt)
			}
			if total := int64(cnt) * ts; total > inline {
				w.need(satAdd(w.offset(field), total))
			}
			slot := -1
			switch tag {
			case tagStripOffsets:
				slot = 0
			case tagStripByteCounts:
				slot = 1
			case tagTileOffsets:
				slot = 2
			case tagTileByteCounts:
				slot = 3
			case tagSubIFDs:
				slot = 4
			}
			if slot >= 0 {
				data[slot] = tiffEntry{typ: typ, count: cnt, set: true}
				copy(data[slot].field[:], field)
			}
		}
	}
	for _, p := range [][2]int{{0, 1}, {2, 3}} {
		offs, counts := data[p[0]], data[p[1]]
		if !offs.set || !counts.set {
			continue // no extents to prove (libtiff estimates missing counts)
		}
		if offs.count != counts.count {
			return 0, nil, formatErr("TIFF", "directory at %d has %d data offsets but %d byte counts", off, offs.count, counts.count)
		}
		if err := w.extents(offs, counts); err != nil {
			return 0, nil, err
		}
	}
	if s := data[4]; s.set && s.count > 0 {
		if s.count > maxTIFFIFDs {
			return 0, nil, formatErr("TIFF", "directory at %d has %d SubIFDs", off, s.count)
		}
		if err := w.spend(int64(s.count)); err != nil {
			return 0, nil, err
		}
		for i := 0; i < int(s.count); i += tiffChunk {
			err := w.values(s, i, min(int(s.count)-i, tiffChunk), func(_ int, v uint64) {
				if v != 0 {
					subs = append(subs, int64(min(v, 1<<62)))
				}
			})
			if err != nil {
				return 0, nil, err
			}
		}
	}
	var nb [8]byte
	if err := readFull(w.r, nb[:offSize], end-offSize); err != nil {
		return 0, nil, fmt.Errorf("read TIFF directory at %d: %w", off, err)
	}
	return w.offset(nb[:]), subs, nil
}

// extents needs the end of every strip or tile, reading both arrays a chunk
// at a time so that a declared count never sizes an allocation.
func (w *tiffWalk) extents(offs, counts tiffEntry) error {
	for _, e := range []tiffEntry{offs, counts} {
		if !w.inside(e) {
			// need has the array's end already; without the array the
			// extents are unknown, and the file is cut anyway.
			w.atLeast = true
			return nil
		}
	}
	n := int(min(offs.count, 1<<62))
	if err := w.spend(2 * int64(n)); err != nil {
		return err
	}
	var o [tiffChunk]uint64
	for i := 0; i < n; i += tiffChunk {
		k := min(n-i, tiffChunk)
		if err := w.values(offs, i, k, func(j int, v uint64) { o[j-i] = v }); err != nil {
			return err
		}
		err := w.values(counts, i, k, func(j int, c uint64) {
			if c != 0 { // 0: an absent strip or tile
				w.need(satAdd(int64(min(o[j-i], 1<<62)), int64(min(c, 1<<62))))
			}
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// values calls fn for elements [from, from+k) of e's array (SHORT, LONG,
// LONG8, IFD, IFD8), inline or out of line. Elements beyond the end of the
// file are not read (need has recorded them).
func (w *tiffWalk) values(e tiffEntry, from, k int, fn func(i int, v uint64)) error {
	ts := tiffTypeSize(e.typ)
	switch e.typ {
	case 3, 4, 13, 16, 18:
	default:
		return formatErr("TIFF", "offsets or counts of type %d", e.typ)
	}
	total := int64(e.count) * ts
	inline := int64(4)
	if w.big {
		inline = 8
	}
	var b []byte
	if total <= inline {
		b = e.field[from*int(ts) : (from+k)*int(ts)]
	} else {
		start := satAdd(w.offset(e.field[:]), int64(from)*ts)
		if satAdd(start, int64(k)*ts) > w.size {
			w.atLeast = true
			return nil
		}
		b = w.buf[:int64(k)*ts]
		if err := readFull(w.r, b, start); err != nil {
			return fmt.Errorf("read TIFF array at %d: %w", start, err)
		}
	}
	for j := 0; j < k; j++ {
		var v uint64
		switch ts {
		case 2:
			v = uint64(w.bo.Uint16(b[j*2:]))
		case 4:
			v = uint64(w.bo.Uint32(b[j*4:]))
		case 8:
			v = w.bo.Uint64(b[j*8:])
		}
		fn(from+j, v)
	}
	return nil
}

// satAdd adds two non-negative sizes, saturating far beyond any file.
func satAdd(a, b int64) int64 {
	if a > 1<<61 || b > 1<<61 {
		return 1 << 62
	}
	return a + b
}

// inside reports whether e's values lie inside the file (inline ones do).
func (w *tiffWalk) inside(e tiffEntry) bool {
	total := int64(e.count) * tiffTypeSize(e.typ)
	inline := int64(4)
	if w.big {
		inline = 8
	}
	return total <= inline || satAdd(w.offset(e.field[:]), total) <= w.size
}
