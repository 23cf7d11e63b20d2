package dicom

import (
	"bytes"
	"compress/flate"
	"testing"
)

// A small generator of DICOM Part-10 files for the tests: elements, nested
// sequences of defined or undefined length, encapsulated pixel data, in any
// of the transfer syntaxes the package reads.

// el is one element to generate.
type el struct {
	tag   Tag
	vr    string
	val   []byte
	items [][]el   // for VR SQ (or UN holding a sequence)
	frags [][]byte // encapsulated pixel data: offset table, then fragments
}

func str(t Tag, vr, v string) el { return el{tag: t, vr: vr, val: []byte(v)} }
func raw(t Tag, vr string, v []byte) el {
	return el{tag: t, vr: vr, val: v}
}
func sq(t Tag, items ...[]el) el { return el{tag: t, vr: "SQ", items: items} }

// gen describes a file.
type gen struct {
	ts        string
	sopClass  string // meta (0002,0002); the data set's comes from its elements
	instance  string
	undefSeq  bool // sequences and items with undefined length
	preamble  string
	metaExtra []el
}

func (g gen) syntax() syntax {
	s, _ := syntaxOf(g.ts)
	return s
}

// file encodes the data set ds after a preamble and meta group.
func (g gen) file(ds []el) []byte {
	if g.ts == "" {
		g.ts = TSExplicitLE
	}
	var b []byte
	pre := make([]byte, preambleLen)
	copy(pre, g.preamble)
	b = append(b, pre...)
	b = append(b, "DICM"...)
	meta := []el{
		raw(tagMetaVersion, "OB", []byte{0, 1}),
		str(tagMediaSOPClass, "UI", g.sopClass),
		str(tagMediaSOPInstance, "UI", g.instance),
		str(tagTransferSyntax, "UI", g.ts),
		str(tagImplementationClass, "UI", "1.2.3.4"),
	}
	meta = append(meta, g.metaExtra...)
	var mb []byte
	for _, e := range meta {
		mb = encode(mb, explicitLE, e, false)
	}
	b = appendHeader(b, explicitLE, tagMetaGroupLength, "UL", 4)
	b = explicitLE.order().AppendUint32(b, uint32(len(mb)))
	b = append(b, mb...)
	s, deflated := syntaxOf(g.ts)
	var db []byte
	for _, e := range ds {
		db = encode(db, s, e, g.undefSeq)
	}
	if deflated {
		var z bytes.Buffer
		w, _ := flate.NewWriter(&z, flate.BestSpeed)
		w.Write(db)
		w.Close()
		db = z.Bytes()
	}
	return append(b, db...)
}

// encode appends element e in syntax s.
func encode(b []byte, s syntax, e el, undef bool) []byte {
	switch {
	case e.frags != nil:
		b = appendHeader(b, s, e.tag, e.vr, undefined)
		for _, f := range e.frags {
			b = appendHeader(b, s, tagItem, "", uint32(len(f)))
			b = append(b, f...)
		}
		return appendHeader(b, s, tagSeqDelim, "", 0)
	case e.vr == "SQ" || e.items != nil:
		inner := s
		if e.vr == "UN" {
			inner = implicitLE
		}
		var body []byte
		for _, it := range e.items {
			var ib []byte
			for _, ie := range it {
				ib = encode(ib, inner, ie, undef)
			}
			if undef {
				body = appendHeader(body, inner, tagItem, "", undefined)
				body = append(body, ib...)
				body = appendHeader(body, inner, tagItemDelim, "", 0)
			} else {
				body = appendHeader(body, inner, tagItem, "", uint32(len(ib)))
				body = append(body, ib...)
			}
		}
		if undef {
			b = appendHeader(b, s, e.tag, e.vr, undefined)
			b = append(b, body...)
			return appendHeader(b, inner, tagSeqDelim, "", 0)
		}
		b = appendHeader(b, s, e.tag, e.vr, uint32(len(body)))
		return append(b, body...)
	}
	v := pad(e.val, e.vr)
	b = appendHeader(b, s, e.tag, e.vr, uint32(len(v)))
	return append(b, v...)
}

// us encodes a 16-bit value in s's byte order.
func us(s syntax, v uint16) []byte { return s.order().AppendUint16(nil, v) }

// ul encodes a 32-bit value in s's byte order.
func ul(s syntax, v uint32) []byte { return s.order().AppendUint32(nil, v) }

// Identifying values planted in the test files; none may survive a rewrite.
const (
	secretName        = "DOE^JOHN^SECRETNAME"
	secretID          = "PID-SECRET-4711"
	secretBirth       = "19450317"
	secretInstitution = "Secret Hospital Of Nowhere"
	secretPrivate     = "PRIVATE-SECRET-VALUE"
	secretNested      = "NESTED^SECRET^PERSON"
	secretAccession   = "ACC-SECRET-99"
	secretDescription = "SECRET SERIES DESCRIPTION"
	secretPhysician   = "SECRET^REFERRING^DOC"
	secretStudyDate   = "20190423"
	secretCodeValue   = "SECRETCODE"
	secretAETitle     = "SECRET_AE_TITLE"
)

var secrets = []string{secretName, secretID, secretBirth, secretInstitution, secretPrivate,
	secretNested, secretAccession, secretDescription, secretPhysician, secretStudyDate,
	secretCodeValue, secretAETitle}

// ctSpec is one CT slice.
type ctSpec struct {
	study, series, instance string
	sopClass                string
	number                  int
	stackID                 string
	burnedIn                string
	pixels                  []byte
	frags                   [][]byte // encapsulated pixel data instead of pixels
	extra                   []el     // more elements (kept in tag order by ctElems)
}

// ctElems returns a CT data set holding every kind of identifying value
// the tests look for, in tag order.
func ctElems(s syntax, c ctSpec) []el {
	if c.sopClass == "" {
		c.sopClass = CTImageStorage
	}
	es := []el{
		str(0x00080005, "CS", "ISO_IR 100"),
		str(0x00080008, "CS", `ORIGINAL\PRIMARY\AXIAL`),
		str(0x00080012, "DA", "20190424"),
		str(tagSOPClass, "UI", c.sopClass),
		str(tagSOPInstance, "UI", c.instance),
		str(0x00080020, "DA", secretStudyDate),
		str(0x00080030, "TM", "101010.123"),
		str(0x00080050, "SH", secretAccession),
		str(0x00080060, "CS", "CT"),
		str(0x00080070, "LO", "ACME Scanners"),
		str(0x00080080, "LO", secretInstitution),
		sq(0x00080082, []el{str(0x00080100, "SH", secretCodeValue), str(0x00080102, "SH", "99LOCAL"), str(0x00080104, "LO", secretInstitution)}),
		str(0x00080090, "PN", secretPhysician),
		str(tagSeriesDescription, "LO", secretDescription),
		sq(0x00081199, []el{
			str(0x00081150, "UI", CTImageStorage),
			str(0x00081155, "UI", c.instance+".99"),
			str(0x00100010, "PN", secretNested),
			// A kept sequence inside a kept sequence.
			sq(0x0040A043, []el{str(0x00080100, "SH", "121"), str(0x00100020, "LO", secretID)}),
		}),
		// A private block: creator and an identifying value.
		str(0x00090010, "LO", "ACME PRIVATE"),
		str(0x00091001, "LO", secretPrivate),
		str(0x00100010, "PN", secretName),
		str(0x00100020, "LO", secretID),
		str(0x00100030, "DA", secretBirth),
		str(0x00100040, "CS", "M"),
		str(0x00180050, "DS", "1.25"),
		str(tagStudyUID, "UI", c.study),
		str(tagSeriesUID, "UI", c.series),
		str(0x00200011, "IS", "7"),
		str(0x00200012, "IS", "3"),
		str(tagInstanceNumber, "IS", itoa(c.number)),
		str(0x00200052, "UI", c.study+".5"),
	}
	if c.stackID != "" {
		es = append(es, str(tagStackID, "SH", c.stackID))
	}
	es = append(es,
		raw(0x00280002, "US", us(s, 1)),
		str(0x00280004, "CS", "MONOCHROME2"),
		raw(0x00280010, "US", us(s, 2)),
		raw(0x00280011, "US", us(s, 2)),
		raw(0x00280100, "US", us(s, 16)),
	)
	if c.burnedIn != "" {
		es = append(es, str(tagBurnedInAnnotation, "CS", c.burnedIn))
	}
	es = append(es, sq(0x00400275, []el{str(0x00400007, "LO", secretNested), str(0x00401001, "SH", secretAccession)}))
	es = append(es, c.extra...)
	sortEls(es)
	switch {
	case c.frags != nil:
		es = append(es, el{tag: tagPixelData, vr: "OB", frags: c.frags})
	default:
		px := c.pixels
		if px == nil {
			px = []byte{1, 2, 3, 4, 5, 6, 7, 8}
		}
		es = append(es, raw(tagPixelData, "OW", px))
	}
	return es
}

func sortEls(es []el) {
	for i := 1; i < len(es); i++ {
		for j := i; j > 0 && es[j].tag < es[j-1].tag; j-- {
			es[j], es[j-1] = es[j-1], es[j]
		}
	}
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}

// ctFile builds one CT slice file in transfer syntax ts.
func ctFile(tb testing.TB, ts string, undefSeq bool, c ctSpec) []byte {
	tb.Helper()
	g := gen{ts: ts, sopClass: c.sopClass, instance: c.instance, undefSeq: undefSeq,
		preamble:  "PREAMBLE " + secretName,
		metaExtra: []el{str(0x00020016, "AE", secretAETitle)}}
	if g.sopClass == "" {
		g.sopClass = CTImageStorage
	}
	return g.file(ctElems(g.syntax(), c))
}
