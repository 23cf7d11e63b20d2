package complete

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// NRRD: a text header from the magic line "NRRD000n" to the first empty
// line; attached data follows. Raw data is sizes × type size bytes (after
// "byte skip" bytes, or the file's last bytes when byte skip is -1); gzip
// data ends in a trailer whose ISIZE is that size mod 2^32. Detached data
// ("data file"), bzip2, text and hex encodings, and "line skip" have no
// proof here: the grouper sends an .nrrd alone, and what it names is the
// server's to judge.

const maxNRRDHeader = 1 << 20

// nrrdHeader is what sizes an NRRD's attached data.
type nrrdHeader struct {
	end      int64  // offset of the first data byte
	encoding string // raw | gzip
	dataSize int64  // bytes of (uncompressed) data
	byteSkip int64
}

func nrrdTypeSize(t string) int64 {
	switch strings.Join(strings.Fields(strings.ToLower(t)), " ") {
	case "signed char", "int8", "int8_t", "uchar", "unsigned char", "uint8", "uint8_t":
		return 1
	case "short", "short int", "signed short", "signed short int", "int16", "int16_t",
		"ushort", "unsigned short", "unsigned short int", "uint16", "uint16_t":
		return 2
	case "int", "signed int", "int32", "int32_t", "uint", "unsigned int", "uint32", "uint32_t", "float":
		return 4
	case "longlong", "long long", "long long int", "signed long long", "signed long long int", "int64", "int64_t",
		"ulonglong", "unsigned long long", "unsigned long long int", "uint64", "uint64_t", "double":
		return 8
	}
	return -1
}

// parseNRRD reads the header; *IncompleteError when it is cut, an error
// wrapping ErrNoProof for forms without a proof.
func parseNRRD(r io.ReaderAt, size int64) (*nrrdHeader, error) {
	br := bufio.NewReaderSize(io.NewSectionReader(r, 0, min(size, maxNRRDHeader)), headerReadSize)
	var (
		off      int64
		h        = &nrrdHeader{encoding: "", dataSize: -1}
		sizes    []int64
		typeSize int64 = -1
		block    int64 = -1
		isBlock  bool
		detached bool
		lineSkip int64
	)
	for n := 0; ; n++ {
		line, err := readLine(br, 64<<10)
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, formatErr("NRRD", "header line longer than 64 KiB")
		}
		off += int64(len(line))
		if n == 0 {
			magic := []byte("NRRD000")
			if !bytes.HasPrefix(line, magic) && !isPrefixOfAny(line, magic) ||
				len(line) > len(magic) && (line[7] < '1' || line[7] > '9') {
				return nil, formatErr("NRRD", "no NRRD000n magic at the start")
			}
		}
		if err == io.EOF {
			if off >= maxNRRDHeader {
				return nil, formatErr("NRRD", "no end of header in the first %d bytes", maxNRRDHeader)
			}
			return nil, &IncompleteError{Want: -1, Have: size, Detail: "no empty line ending the NRRD header"}
		}
		if err != nil {
			return nil, fmt.Errorf("read NRRD header: %w", err)
		}
		text := strings.TrimRight(string(line), "\r\n")
		if text == "" && n > 0 {
			break
		}
		if n == 0 || strings.HasPrefix(text, "#") {
			continue
		}
		key, value, ok := strings.Cut(text, ": ")
		if !ok {
			continue // "key:=value" pairs and odd lines say nothing of the size
		}
		value = strings.TrimSpace(value)
		switch strings.ToLower(strings.TrimSpace(key)) {
		case "type":
			typeSize = nrrdTypeSize(value)
			isBlock = strings.EqualFold(value, "block")
		case "block size", "blocksize":
			if v, err := strconv.ParseInt(value, 10, 64); err == nil && v > 0 {
				block = v
			}
		case "sizes":
			sizes = sizes[:0]
			for _, f := range strings.Fields(value) {
				v, err := strconv.ParseInt(f, 10, 64)
				if err != nil || v < 0 {
					return nil, formatErr("NRRD", "sizes %q", value)
				}
				if len(sizes) < 64 {
					sizes = append(sizes, v)
				}
			}
		case "encoding":
			h.encoding = strings.ToLower(value)
		case "data file", "datafile":
			detached = true
		case "byte skip", "byteskip":
			v, err := strconv.ParseInt(value, 10, 64)
			if err != nil || v < -1 {
				return nil, formatErr("NRRD", "byte skip %q", value)
			}
			h.byteSkip = v
		case "line skip", "lineskip":
			if v, err := strconv.ParseInt(value, 10, 64); err != nil || v != 0 {
				lineSkip = 1
			}
		}
	}
	h.end = off
	switch h.encoding {
	case "gz":
		h.encoding = "gzip"
	case "raw", "gzip":
	default:
		return nil, fmt.Errorf("NRRD encoding %q: %w", h.encoding, ErrNoProof)
	}
	if detached {
		return nil, fmt.Errorf("NRRD with detached data: %w", ErrNoProof)
	}
	if lineSkip != 0 {
		return nil, fmt.Errorf("NRRD with line skip: %w", ErrNoProof)
	}
	if isBlock {
		typeSize = block
	}
	if typeSize < 0 || len(sizes) == 0 {
		return nil, formatErr("NRRD", "no usable type and sizes in the header")
	}
	total := typeSize
	for _, s := range sizes {
		if s != 0 && total > (1<<62)/s {
			return nil, formatErr("NRRD", "data size overflows")
		}
		total *= s
	}
	h.dataSize = total
	return h, nil
}

func checkNRRD(r io.ReaderAt, size int64) error {
	h, err := parseNRRD(r, size)
	if err != nil {
		return err
	}
	if h.encoding == "raw" {
		want := h.end + h.dataSize
		switch {
		case h.byteSkip == -1 && size < want:
			return &IncompleteError{Want: want, AtLeast: true, Have: size}
		case h.byteSkip == -1:
			return nil
		}
		want += h.byteSkip
		switch {
		case size < want:
			return &IncompleteError{Want: want, Have: size}
		case size > want:
			return &OverlongError{Want: want, Have: size}
		}
		return nil
	}
	if h.byteSkip != 0 {
		return fmt.Errorf("gzip NRRD with byte skip: %w", ErrNoProof)
	}
	return checkGzipTrailer(r, size, h.end, h.dataSize)
}

// checkGzipTrailer checks that a gzip stream starts at off and that the
// file's last 4 bytes (ISIZE) say want mod 2^32. The stream is not inflated
// and its CRC is not checked: the server's import reports a corrupt stream.
func checkGzipTrailer(r io.ReaderAt, size, off, want int64) error {
	var head [10]byte
	n, _ := r.ReadAt(head[:], off)
	if n < 10 {
		if bytes.HasPrefix(head[:n], gzipMagic) || isPrefixOfAny(head[:n], gzipMagic) {
			return &IncompleteError{Want: -1, Have: size, Detail: "gzip header cut"}
		}
		return formatErr("gzip", "no gzip magic where the data starts")
	}
	if !bytes.HasPrefix(head[:], gzipMagic) {
		return formatErr("gzip", "no gzip magic where the data starts")
	}
	if head[3]&0x04 != 0 {
		return fmt.Errorf("gzip with extra fields (BGZF?): %w", ErrNoProof)
	}
	var tail [4]byte
	if size < off+18 || readFull(r, tail[:], size-4) != nil {
		return &IncompleteError{Want: -1, Have: size, Detail: "no gzip trailer"}
	}
	if got := binary.LittleEndian.Uint32(tail[:]); got != uint32(want) {
		return &IncompleteError{Want: -1, Have: size, Detail: fmt.Sprintf(
			"gzip trailer says %d bytes (mod 2^32), header says %d: not the end of the stream", got, want)}
	}
	return nil
}
