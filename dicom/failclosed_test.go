package dicom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
)

// nested returns depth ReferencedSOPSequences (kept by the procedure), each
// the only element of its parent's one item; the innermost item holds a
// patient name, a reference to the instance and the series UID.
func nested(depth int, series string) el {
	e := sq(0x00081199, []el{
		str(0x00081155, "UI", "1.2.826.77.1.2.3"),
		str(0x00100010, "PN", secretNested),
		str(tagSeriesUID, "UI", series),
	})
	for range depth - 1 {
		e = sq(0x00081199, []el{e})
	}
	return e
}

// nestedPath is the dump path of the innermost item of nested(depth).
func nestedPath(depth int) string {
	return strings.Repeat("(0008,1199)[0]", depth)
}

// A legal file with one sequence nested 40 deep (an SR content tree goes
// that deep) is read and rewritten, de-identified all the way down.
func TestNestedFortyDeep(t *testing.T) {
	const depth = 40
	for _, ts := range syntaxes[:4] {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				c := ctSpec{study: "1.2.826.77", series: "1.2.826.77.1", instance: "1.2.826.77.1.2", number: 1}
				g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: c.instance, undefSeq: undef}
				es := ctElems(g.syntax(), c)
				for i, e := range es {
					if e.tag == 0x00081199 {
						es[i] = nested(depth, c.series)
					}
				}
				in := g.file(es)
				for name, read := range map[string]func(io.Reader) (Header, error){"ReadHeader": ReadHeader, "Verify": Verify} {
					h, err := read(bytes.NewReader(in))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					if h.StudyInstanceUID != c.study || h.SeriesInstanceUID != c.series || h.SOPClassUID != CTImageStorage {
						t.Errorf("%s: UIDs %q %q %q, want %q %q %q", name, h.StudyInstanceUID, h.SeriesInstanceUID, h.SOPClassUID, c.study, c.series, CTImageStorage)
					}
				}
				d := testDeidentifier(t)
				out, _ := rewrite(t, d, in)
				_, got := dump(t, out)
				inner := nestedPath(depth)
				if v := text(got[inner+"(0010,0010)"]); v != "DUMMY^PATIENT^^^" {
					t.Errorf("PatientName %d deep = %q, want the dummy", depth, v)
				}
				if v := text(got[inner+"(0008,1155)"]); v != d.UID("1.2.826.77.1.2.3") {
					t.Errorf("ReferencedSOPInstanceUID %d deep = %q, want %q", depth, v, d.UID("1.2.826.77.1.2.3"))
				}
				for _, sec := range append(secrets, c.series, c.study) {
					if bytes.Contains(out, []byte(sec)) {
						t.Errorf("output holds %q", sec)
					}
				}
			})
		}
	}
}

// A file nesting items without end is refused once past the limit, with a
// FormatError and a few buffers allocated, whoever reads it.
func TestNestedWithoutEnd(t *testing.T) {
	const depth = 100000
	for _, ts := range []string{TSExplicitLE, TSImplicitLE} {
		t.Run(ts, func(t *testing.T) {
			g := gen{ts: ts, sopClass: CTImageStorage, instance: "1.2.3"}
			s := g.syntax()
			b := g.file([]el{str(tagSOPClass, "UI", CTImageStorage), str(tagSOPInstance, "UI", "1.2.3")})
			for range depth {
				b = appendHeader(b, s, 0x00081199, "SQ", undefined)
				b = appendHeader(b, s, tagItem, "", undefined)
			}
			d := testDeidentifier(t)
			readers := map[string]func(io.Reader) error{
				"ReadHeader": func(r io.Reader) error { _, err := ReadHeader(r); return err },
				"Verify":     func(r io.Reader) error { _, err := Verify(r); return err },
				"Rewrite":    func(r io.Reader) error { _, err := d.Rewrite(io.Discard, r); return err },
			}
			for name, read := range readers {
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				err := read(bytes.NewReader(b))
				runtime.ReadMemStats(&after)
				var fe *FormatError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), "nested deeper") {
					t.Errorf("%s: %v, want a FormatError on the nesting", name, err)
				}
				if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
					t.Errorf("%s: allocated %d bytes, want under 1 MiB", name, got)
				}
			}
		})
	}
}

// A sequence or item of undefined length whose delimiter never comes is a
// file cut short, at any depth, for every reader.
func TestUnclosedUndefinedLength(t *testing.T) {
	g := gen{ts: TSImplicitLE, sopClass: CTImageStorage, instance: "1.2.3", undefSeq: true}
	head := []el{str(tagSOPClass, "UI", CTImageStorage), str(tagSOPInstance, "UI", "1.2.3")}
	whole := g.file(append(head, nested(40, "1.2.4")))
	// Each cut drops delimiters only: the last item's, the last
	// sequence's, or all 80 of them.
	delims := 0
	for bytes.HasSuffix(whole[:len(whole)-8*delims], appendHeader(nil, implicitLE, tagSeqDelim, "", 0)) ||
		bytes.HasSuffix(whole[:len(whole)-8*delims], appendHeader(nil, implicitLE, tagItemDelim, "", 0)) {
		delims++
	}
	if delims != 80 {
		t.Fatalf("test file ends with %d delimiters, want 80", delims)
	}
	cuts := map[string][]byte{
		"sequence without its delimiter":      whole[:len(whole)-8],
		"item and sequence without delimiter": whole[:len(whole)-16],
		"innermost item without delimiter":    whole[:len(whole)-8*80],
	}
	d := testDeidentifier(t)
	for name, b := range cuts {
		t.Run(name, func(t *testing.T) {
			if _, err := ReadHeader(bytes.NewReader(b)); !errors.Is(err, ErrTruncated) {
				t.Errorf("ReadHeader: %v, want ErrTruncated", err)
			}
			if _, err := Verify(bytes.NewReader(b)); !errors.Is(err, ErrTruncated) {
				t.Errorf("Verify: %v, want ErrTruncated", err)
			}
			if _, err := d.Rewrite(io.Discard, bytes.NewReader(b)); !errors.Is(err, ErrTruncated) {
				t.Errorf("Rewrite: %v, want ErrTruncated", err)
			}
		})
	}
	if _, err := d.Rewrite(io.Discard, bytes.NewReader(whole)); err != nil {
		t.Errorf("Rewrite of the whole file: %v", err)
	}
}
