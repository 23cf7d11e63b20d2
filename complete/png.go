package complete

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
)

// PNG: the signature, then chunks (length, type, data, CRC) walked by their
// lengths, reading only the chunk headers; the file ends exactly with IEND.
// CRCs are not checked here: that would read every byte.

var pngSignature = []byte("\x89PNG\r\n\x1a\n")

// maxPNGChunks bounds the walk; a real PNG has a few thousand at most.
const maxPNGChunks = 1 << 24

func checkPNG(r io.ReaderAt, size int64) error {
	win := newWindow(r, size)
	sig, err := win.at(0, 8)
	if err != nil {
		return fmt.Errorf("read PNG signature: %w", err)
	}
	if len(sig) < 8 {
		if isPrefixOfAny(sig, pngSignature) {
			return &IncompleteError{Want: -1, Have: size}
		}
		return formatErr("PNG", "no PNG signature")
	}
	if !bytes.Equal(sig, pngSignature) {
		return formatErr("PNG", "no PNG signature")
	}
	off := int64(8)
	for n := 0; n < maxPNGChunks; n++ {
		h, err := win.at(off, 8)
		if err != nil {
			return fmt.Errorf("read PNG chunk at %d: %w", off, err)
		}
		if len(h) < 8 {
			return &IncompleteError{Want: off + 12, AtLeast: true, Have: size, Detail: "no IEND chunk"}
		}
		length := int64(binary.BigEndian.Uint32(h))
		typ := string(h[4:8])
		if length > 1<<31-1 {
			return formatErr("PNG", "chunk %q at %d is %d bytes long", typ, off, length)
		}
		for _, c := range h[4:8] {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
				return formatErr("PNG", "chunk type %q at %d", typ, off)
			}
		}
		if n == 0 && typ != "IHDR" {
			return formatErr("PNG", "first chunk is %q, not IHDR", typ)
		}
		end := off + 12 + length
		if typ == "IEND" {
			switch {
			case end > size:
				return &IncompleteError{Want: end, Have: size}
			case end < size:
				return &OverlongError{Want: end, Have: size, Detail: "bytes after IEND"}
			}
			return nil
		}
		if end > size {
			return &IncompleteError{Want: end + 12, AtLeast: true, Have: size, Detail: fmt.Sprintf("chunk %s cut", typ)}
		}
		off = end
	}
	return fmt.Errorf("more than %d PNG chunks: %w", maxPNGChunks, ErrNoProof)
}
