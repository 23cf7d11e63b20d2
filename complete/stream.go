package complete

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
)

// StreamVerifier checks, on a file's bytes written to it from the first to
// the last, what Check cannot prove from headers: that a gzip stream
// inflates whole, with valid CRCs and sizes, to the size its header says.
// Feed it the bytes a hash step reads anyway. Write never fails because of
// the content (so it can sit beside a hash in an io.MultiWriter); Close
// returns the verdict, like Check's errors, and must be called.
type StreamVerifier interface {
	io.Writer
	Close() error
}

// NewStreamVerifier returns the verifier for name's format, or nil when
// Check's proof is all there is (every format but .nii.gz and .nrrd).
// size is the file's size, used in error messages.
func NewStreamVerifier(name string, size int64) StreamVerifier {
	switch ext(name) {
	case ".nii.gz":
		return newPipeVerifier(func(r io.Reader) error { return verifyNIfTIGz(r, size) })
	case ".nrrd":
		return newPipeVerifier(func(r io.Reader) error { return verifyNRRD(r, size) })
	}
	return nil
}

// pipeVerifier runs a pull-style check (inflating needs a Reader) in a
// goroutine fed by Write; Close joins it.
type pipeVerifier struct {
	pw     *io.PipeWriter
	done   chan error
	closed bool
	err    error
}

func newPipeVerifier(check func(io.Reader) error) *pipeVerifier {
	pr, pw := io.Pipe()
	v := &pipeVerifier{pw: pw, done: make(chan error, 1)}
	go func() {
		// A large buffer: fewer hand-offs through the pipe than gzip's own
		// 4 KiB one would make.
		err := check(bufio.NewReaderSize(pr, 256<<10))
		// Keep taking bytes after a verdict, so that Write never blocks.
		_, _ = io.Copy(io.Discard, pr)
		v.done <- err
	}()
	return v
}

func (v *pipeVerifier) Write(p []byte) (int, error) {
	if v.closed {
		return 0, errors.New("write to a closed stream verifier")
	}
	return v.pw.Write(p)
}

func (v *pipeVerifier) Close() error {
	if !v.closed {
		v.closed = true
		v.pw.Close()
		v.err = <-v.done
	}
	return v.err
}

// inflateAll inflates every gzip member from r, passing the first bytes of
// the output to head (at most len(first)) and returning the total.
func inflateAll(r io.Reader, size int64, first []byte) (head []byte, total int64, err error) {
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, 0, gzipErr(err, size)
	}
	m, err := readSome(zr, first)
	total = int64(m)
	if err == nil {
		var n int64
		n, err = io.Copy(io.Discard, zr)
		total += n
	} else if err == io.EOF {
		err = nil
	}
	if err != nil {
		return first[:m], total, gzipErr(err, size)
	}
	return first[:m], total, nil
}

func gzipErr(err error, size int64) error {
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return &IncompleteError{Want: -1, Have: size, Detail: "the gzip stream is cut"}
	case errors.Is(err, gzip.ErrChecksum):
		return formatErr("gzip", "CRC or size in a gzip trailer does not match the data")
	case errors.Is(err, gzip.ErrHeader):
		return formatErr("gzip", "bytes after the gzip stream, or a broken gzip header")
	}
	return formatErr("gzip", "inflate: %v", err)
}

func verifyNIfTIGz(r io.Reader, size int64) error {
	head, total, err := inflateAll(r, size, make([]byte, nifti2HeaderSize))
	if err != nil {
		return err
	}
	h, need, err := parseNIfTI(head)
	switch {
	case err != nil:
		return err
	case need > 0:
		return formatErr("NIfTI", "the gzip stream ends inside the NIfTI header")
	case total != h.dataEnd:
		return formatErr("NIfTI", "the gzip stream holds %d bytes, the NIfTI header says %d", total, h.dataEnd)
	}
	return nil
}

// verifyNRRD checks a gzip-encoded NRRD's attached data; other encodings
// pass (Check proves raw data from sizes).
func verifyNRRD(r io.Reader, size int64) error {
	br := bufio.NewReader(r)
	var hdr bytes.Buffer
	for hdr.Len() < maxNRRDHeader {
		line, err := br.ReadSlice('\n')
		hdr.Write(line)
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break // parseNRRD below says what is wrong
		}
		if hdr.Len() > len(line) && (string(line) == "\n" || string(line) == "\r\n") {
			break
		}
	}
	h, err := parseNRRD(bytes.NewReader(hdr.Bytes()), int64(hdr.Len()))
	if err != nil {
		var ie *IncompleteError
		if errors.As(err, &ie) {
			ie.Have = size
		}
		if errors.Is(err, ErrNoProof) {
			return nil
		}
		return err
	}
	if h.encoding != "gzip" || h.byteSkip != 0 {
		return nil
	}
	_, total, err := inflateAll(br, size, nil)
	switch {
	case err != nil:
		return err
	case total != h.dataSize:
		return formatErr("NRRD", "the gzip data holds %d bytes, the header says %d", total, h.dataSize)
	}
	return nil
}
