package dicom

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"testing"
)

// dumped is one element of a parsed file.
type dumped struct {
	vr    string
	value []byte // nil for sequences
	items int    // number of items, for sequences
}

// dump parses a whole file into its meta group and a flat map from element
// path ("(0008,1199)[0](0008,1155)") to element, failing the test on any
// structural error. It is the tests' independent check that output is
// well-formed: meta group length right, every sequence and item closed.
func dump(t testing.TB, b []byte) (metaGroup, map[string]dumped) {
	t.Helper()
	in := newInput(bytes.NewReader(b))
	if err := in.readPrefix(); err != nil {
		t.Fatalf("dump: %v", err)
	}
	// The group length must be first and must cover the meta group exactly.
	e, err := in.readElement(explicitLE)
	if err != nil || e.tag != tagMetaGroupLength || e.length != 4 {
		t.Fatalf("dump: first meta element %v %v, want the group length", e, err)
	}
	v, _ := in.value(4, e.tag)
	glen := int64(explicitLE.order().Uint32(v))
	metaStart := in.off
	in = newInput(bytes.NewReader(b))
	_ = in.readPrefix()
	meta, err := readMeta(in)
	if err != nil {
		t.Fatalf("dump: meta: %v", err)
	}
	if got, want := in.off-metaStart, glen; got != want {
		t.Fatalf("dump: meta group is %d bytes, its group length says %d", got, want)
	}
	s, deflated := syntaxOf(meta.get(tagTransferSyntax))
	if deflated {
		in = newInput(flate.NewReader(in.br))
	}
	out := map[string]dumped{}
	if err := dumpItem(in, s, -2, "", out, 0); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return meta, out
}

// dumpItem reads elements until end (-2: end of input; -1: item delimiter).
func dumpItem(in *input, s syntax, end int64, prefix string, out map[string]dumped, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("too deep")
	}
	var last Tag
	for {
		if end >= 0 && in.off >= end {
			return nil
		}
		e, err := in.readElement(s)
		if err == io.EOF && end == -2 {
			return nil
		}
		if err != nil {
			return err
		}
		if e.tag == tagItemDelim && end == -1 {
			return nil
		}
		if e.tag <= last {
			return fmt.Errorf("%s%s out of order after %s", prefix, e.tag, last)
		}
		last = e.tag
		path := prefix + e.tag.String()
		if e.tag == tagPixelData && e.undefinedLength() {
			var all []byte
			n := 0
			for {
				it, err := in.readItemHeader(e, s)
				if err != nil {
					return err
				}
				if it.tag == tagSeqDelim {
					break
				}
				f := make([]byte, it.length)
				if err := in.full(f, func() string { return "fragment" }); err != nil {
					return err
				}
				all = append(all, f...)
				n++
			}
			out[path] = dumped{vr: e.vr, value: all, items: n}
			continue
		}
		if in.isSequence(e, s) {
			inner := innerSyntax(e, s)
			n := 0
			seqEnd := int64(-1)
			if !e.undefinedLength() {
				seqEnd = in.off + int64(e.length)
			}
			for seqEnd < 0 || in.off < seqEnd {
				it, err := in.readItemHeader(e, inner)
				if err != nil {
					return err
				}
				if it.tag == tagSeqDelim {
					break
				}
				iend := int64(-1)
				if !it.undefinedLength() {
					iend = in.off + int64(it.length)
				}
				if err := dumpItem(in, inner, iend, fmt.Sprintf("%s[%d]", path, n), out, depth+1); err != nil {
					return err
				}
				n++
			}
			out[path] = dumped{vr: e.vr, items: n}
			continue
		}
		if e.undefinedLength() {
			return fmt.Errorf("%s has undefined length", path)
		}
		val := make([]byte, e.length)
		if err := in.full(val, func() string { return path }); err != nil {
			return err
		}
		out[path] = dumped{vr: e.vr, value: val}
	}
}
