package dicom

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// seeds are generated files in every syntax, plain and enhanced, with
// defined and undefined lengths, and a few cut short.
func seeds(tb testing.TB) [][]byte {
	var out [][]byte
	for _, ts := range syntaxes {
		for _, undef := range []bool{false, true} {
			c := ctSpec{study: "1.2", series: "1.2.3", instance: "1.2.3.4", number: 1}
			if ts.encapsulated {
				c.frags = [][]byte{nil, []byte("JPEG")}
			}
			b := ctFile(tb, ts.ts, undef, c)
			out = append(out, b, b[:len(b)/2], b[:len(b)-3])
			g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: "1.2.3.9.1", undefSeq: undef}
			out = append(out, g.file(enhancedCT(g.syntax(), "S")))
		}
	}
	// An explicit UN element holding an implicit VR sequence.
	g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.2"}
	out = append(out, g.file([]el{
		str(tagSOPClass, "UI", CTImageStorage),
		{tag: 0x00081199, vr: "UN", items: [][]el{{str(0x00081155, "UI", "1.2.3")}}},
	}))
	return out
}

func FuzzReadHeader(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h1, err1 := ReadHeader(bytes.NewReader(b))
		h2, err2 := Verify(io.MultiReader(bytes.NewReader(b)))
		h3, err3 := Verify(bytes.NewReader(b))
		if (err2 == nil) != (err3 == nil) || h2 != h3 {
			t.Fatalf("Verify by stream (%v) and by seeking (%v) disagree", err2, err3)
		}
		if err2 == nil && (err1 != nil || h1 != h2) {
			t.Fatalf("Verify passed but ReadHeader: %v", err1)
		}
	})
}

func FuzzRewrite(f *testing.F) {
	for _, s := range seeds(f) {
		f.Add(s)
	}
	d := testDeidentifier(f)
	keep, err := ParseProcedure([]byte(`{"version": "0.1.0", "default": "K", "sopClass": {}}`))
	if err != nil {
		f.Fatal(err)
	}
	dk := testDeidentifier(f, WithProcedure(keep))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, d := range []*Deidentifier{d, dk} {
			var out bytes.Buffer
			_, err := d.Rewrite(&out, bytes.NewReader(b))
			if err != nil {
				var re *RejectError
				var fe *FormatError
				if !errors.As(err, &re) && !errors.As(err, &fe) && !errors.Is(err, ErrTruncated) {
					t.Fatalf("Rewrite: unclassified error %v", err)
				}
				continue
			}
			// What the rewriter writes, it can read and rewrite again.
			if _, err := Verify(bytes.NewReader(out.Bytes())); err != nil {
				t.Fatalf("Verify of the output: %v", err)
			}
			var again bytes.Buffer
			if _, err := d.Rewrite(&again, bytes.NewReader(out.Bytes())); err != nil {
				t.Fatalf("Rewrite of the output: %v", err)
			}
		}
	})
}
