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

// syntaxes are the transfer syntaxes the tests run through: the three
// uncompressed encodings, deflate, and an encapsulated (JPEG) one.
var syntaxes = []struct {
	name, ts     string
	encapsulated bool
}{
	{"explicit LE", TSExplicitLE, false},
	{"implicit LE", TSImplicitLE, false},
	{"explicit BE", TSExplicitBE, false},
	{"deflated", TSDeflatedLE, false},
	{"JPEG encapsulated", "1.2.840.10008.1.2.4.70", true},
}

func TestReadHeader(t *testing.T) {
	for _, ts := range syntaxes {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				c := ctSpec{study: "1.2.3.100", series: "1.2.3.100.1", instance: "1.2.3.100.1.7", number: 7, burnedIn: "NO"}
				if ts.encapsulated {
					c.frags = [][]byte{nil, []byte("JPEGDATA"), []byte("MORE")}
				}
				b := ctFile(t, ts.ts, undef, c)
				for name, read := range map[string]func(io.Reader) (Header, error){"ReadHeader": ReadHeader, "Verify": Verify} {
					h, err := read(bytes.NewReader(b))
					if err != nil {
						t.Fatalf("%s: %v", name, err)
					}
					want := Header{
						TransferSyntaxUID: ts.ts, MediaStorageSOPClassUID: CTImageStorage,
						SOPClassUID: CTImageStorage, StudyInstanceUID: c.study, SeriesInstanceUID: c.series,
						SeriesNumber: "7", SeriesDescription: secretDescription, InstanceNumber: "7",
						BurnedInAnnotation: "NO", PixelDataOffset: h.PixelDataOffset,
					}
					if h != want {
						t.Errorf("%s got %+v\nwant %+v", name, h, want)
					}
					if h.PixelDataOffset <= prefixLen {
						t.Errorf("%s PixelDataOffset = %d", name, h.PixelDataOffset)
					}
				}
			})
		}
	}
}

// enhancedCT is a multi-frame file whose StackID and TemporalPositionIndex
// are only in the functional groups.
func enhancedCT(s syntax, topStack string) []el {
	frame := func(i int) []el {
		return []el{sq(tagFrameContentSeq, []el{
			str(tagStackID, "SH", "STACK-FG"),
			raw(tagTemporalPosIndex, "UL", ul(s, uint32(10+i))),
		})}
	}
	es := []el{
		str(tagSOPClass, "UI", "1.2.840.10008.5.1.4.1.1.2.1"),
		str(tagSOPInstance, "UI", "1.2.3.9.1"),
		str(tagStudyUID, "UI", "1.2.3.9"),
		str(tagSeriesUID, "UI", "1.2.3.9.2"),
		str(tagNumberOfFrames, "IS", "3"),
		raw(tagRows, "US", us(s, 1)),
		sq(tagSharedFGSeq, []el{sq(0x00289110, []el{str(0x00280030, "DS", `1\1`)})}),
		sq(tagPerFrameFGSeq, frame(0), frame(1), frame(2)),
		raw(tagPixelData, "OW", make([]byte, 6)),
	}
	if topStack != "" {
		es = append(es, str(tagStackID, "SH", topStack))
		sortEls(es)
	}
	return es
}

func TestReadHeaderEnhanced(t *testing.T) {
	for _, ts := range syntaxes[:4] {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				g := gen{ts: ts.ts, sopClass: "1.2.840.10008.5.1.4.1.1.2.1", instance: "1.2.3.9.1", undefSeq: undef}
				h, err := Verify(bytes.NewReader(g.file(enhancedCT(g.syntax(), ""))))
				if err != nil {
					t.Fatal(err)
				}
				if h.StackID != "STACK-FG" || !h.HasStackID || h.StackIDTopLevel {
					t.Errorf("StackID %q has %v top-level %v, want STACK-FG from the functional groups", h.StackID, h.HasStackID, h.StackIDTopLevel)
				}
				if h.TemporalPositionIndex != 10 || !h.HasTemporalPosition {
					t.Errorf("TemporalPositionIndex %d (%v), want 10 from the first frame", h.TemporalPositionIndex, h.HasTemporalPosition)
				}
				if h.NumberOfFrames != 3 {
					t.Errorf("NumberOfFrames %d, want 3", h.NumberOfFrames)
				}
				_, key, _ := h.GroupKey()
				if key != "1.2.3.9.2" {
					t.Errorf("GroupKey series %q, want the series UID: panimg reads StackID at the top level only", key)
				}

				h, err = ReadHeader(bytes.NewReader(g.file(enhancedCT(g.syntax(), "STACK-TOP"))))
				if err != nil {
					t.Fatal(err)
				}
				if h.StackID != "STACK-TOP" || !h.StackIDTopLevel {
					t.Errorf("StackID %q top-level %v, want STACK-TOP", h.StackID, h.StackIDTopLevel)
				}
				if _, key, _ := h.GroupKey(); key != "STACK-TOP" {
					t.Errorf("GroupKey stack %q, want STACK-TOP", key)
				}
			})
		}
	}
}

// topLevelBoundaries returns the offsets where a top-level element of the
// data set of b ends (uncompressed syntaxes only).
func topLevelBoundaries(t *testing.T, b []byte) map[int]bool {
	t.Helper()
	in := newInput(bytes.NewReader(b))
	if err := in.readPrefix(); err != nil {
		t.Fatal(err)
	}
	m, err := readMeta(in)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := syntaxOf(m.get(tagTransferSyntax))
	out := map[int]bool{int(in.off): true}
	for {
		e, err := in.readElement(s)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := in.skipValue(e, s, 0); err != nil {
			t.Fatal(err)
		}
		out[int(in.off)] = true
	}
}

func TestVerifyTruncated(t *testing.T) {
	for _, ts := range syntaxes {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				c := ctSpec{study: "1.2.3", series: "1.2.3.4", instance: "1.2.3.4.5", number: 1}
				if ts.encapsulated {
					c.frags = [][]byte{nil, []byte("JPEGDATA")}
				}
				full := ctFile(t, ts.ts, undef, c)
				var ok map[int]bool
				if ts.ts != TSDeflatedLE {
					ok = topLevelBoundaries(t, full)
				}
				rowsAt := bytes.Index(full, []byte{0x28, 0, 0x10, 0})
				if ts.ts == TSExplicitBE {
					rowsAt = bytes.Index(full, []byte{0, 0x28, 0, 0x10})
				}
				for n := 0; n < len(full); n++ {
					for name, r := range map[string]io.Reader{
						"seeker": bytes.NewReader(full[:n]),
						"stream": io.MultiReader(bytes.NewReader(full[:n])),
					} {
						_, err := Verify(r)
						if err == nil {
							// A cut exactly between two top-level elements
							// before Rows leaves a shorter, valid data set.
							if ok[n] && n <= rowsAt {
								continue
							}
							t.Fatalf("%s: Verify of the first %d of %d bytes: no error", name, n, len(full))
						}
						var fe *FormatError
						if n < prefixLen && errors.As(err, &fe) {
							continue
						}
						if !errors.Is(err, ErrTruncated) {
							t.Fatalf("%s: Verify of the first %d of %d bytes: %v, want ErrTruncated", name, n, len(full), err)
						}
					}
				}
			})
		}
	}
}

func TestTruncatedNamesWhat(t *testing.T) {
	full := ctFile(t, TSExplicitLE, false, ctSpec{study: "1.2", series: "1.2.3", instance: "1.2.3.4", pixels: make([]byte, 1000)})
	cut := bytes.LastIndex(full, []byte(secretName)) + 3
	_, err := ReadHeader(bytes.NewReader(full[:cut]))
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "value of (0010,0010)") {
		t.Errorf("cut inside PatientName: %v, want truncated in the value of (0010,0010)", err)
	}
	_, err = Verify(bytes.NewReader(full[:len(full)-10]))
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "value of (7FE0,0010)") {
		t.Errorf("cut inside pixel data: %v, want truncated in the value of (7FE0,0010)", err)
	}
	// ReadHeader stops at the pixel data: a cut there is Verify's to find.
	if _, err := ReadHeader(bytes.NewReader(full[:len(full)-10])); err != nil {
		t.Errorf("ReadHeader with cut pixel data: %v, want nil", err)
	}
	// An image whose file ends after its header.
	h, _ := ReadHeader(bytes.NewReader(full))
	_, err = Verify(bytes.NewReader(full[:h.PixelDataOffset]))
	if !errors.Is(err, ErrTruncated) || !strings.Contains(err.Error(), "pixel data") {
		t.Errorf("file ending before its pixel data: %v, want truncated naming the pixel data", err)
	}
}

func TestReadHeaderRejectsNonDICOM(t *testing.T) {
	for name, b := range map[string][]byte{
		"empty":    nil,
		"short":    []byte("hello"),
		"no magic": make([]byte, 300),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(b))
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("got %v, want a *FormatError", err)
			}
		})
	}
}

// A declared length far beyond the file must neither allocate it nor pass.
func TestHugeDeclaredLength(t *testing.T) {
	g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.2"}
	b := g.file([]el{str(tagSOPClass, "UI", CTImageStorage)})
	b = appendHeader(b, explicitLE, 0x00091001, "UN", 0xFFFFFFF0)
	b = append(b, "abc"...)
	for name, read := range map[string]func(io.Reader) (Header, error){"ReadHeader": ReadHeader, "Verify": Verify} {
		_, err := read(bytes.NewReader(b))
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("%s: %v, want ErrTruncated", name, err)
		}
	}
	d := testDeidentifier(t)
	if _, err := d.Rewrite(io.Discard, bytes.NewReader(b)); !errors.Is(err, ErrTruncated) {
		t.Errorf("Rewrite: %v, want ErrTruncated", err)
	}
	// Nothing near the declared 4 GiB is allocated: a few buffers at most.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	ReadHeader(bytes.NewReader(b))
	Verify(io.MultiReader(bytes.NewReader(b)))
	d.Rewrite(io.Discard, io.MultiReader(bytes.NewReader(b)))
	runtime.ReadMemStats(&after)
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Errorf("allocated %d bytes for a file declaring a 4 GiB value, want under 1 MiB", got)
	}
}
