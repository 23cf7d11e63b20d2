package dicom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// The meta group is written from the rewritten data set: its SOP instance
// is the data set's new one even when the input's meta group named another.
func TestRewriteMetaFollowsDataSet(t *testing.T) {
	for _, ts := range syntaxes {
		t.Run(ts.name, func(t *testing.T) {
			c := ctSpec{study: "1.2.826.5", series: "1.2.826.5.1", instance: "1.2.826.5.1.1", number: 1}
			if ts.encapsulated {
				c.frags = [][]byte{nil, []byte("JPEG")}
			}
			g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: "1.2.826.5.1.999"} // not the data set's
			in := g.file(ctElems(g.syntax(), c))
			d := testDeidentifier(t)
			out, res := rewrite(t, d, in)
			meta, got := dump(t, out)
			if m, ds := meta.get(tagMediaSOPInstance), text(got["(0008,0018)"]); m != ds || ds != d.UID(c.instance) {
				t.Errorf("MediaStorageSOPInstanceUID %q, data set SOPInstanceUID %q, want both %q", m, ds, d.UID(c.instance))
			}
			if m, ds := meta.get(tagMediaSOPClass), text(got["(0008,0016)"]); m != ds || ds != CTImageStorage {
				t.Errorf("MediaStorageSOPClassUID %q, data set SOPClassUID %q, want both %q", m, ds, CTImageStorage)
			}
			if res.SOPInstanceUID != d.UID(c.instance) {
				t.Errorf("Result.SOPInstanceUID %q, want %q", res.SOPInstanceUID, d.UID(c.instance))
			}
			// From a source that cannot seek, the same bytes.
			var stream bytes.Buffer
			if _, err := d.Rewrite(&stream, io.MultiReader(bytes.NewReader(in))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(stream.Bytes(), out) {
				t.Errorf("rewrite from a stream differs from the rewrite from a seeker")
			}
		})
	}
}

// refFile is a CT slice that refers to its own series, study and instance
// from inside sequences, before the top-level SeriesInstanceUID.
func refFile(tb testing.TB, ts string, c ctSpec) []byte {
	tb.Helper()
	ref := []el{
		str(0x00081150, "UI", CTImageStorage),
		str(0x00081155, "UI", c.instance),
		str(tagStudyUID, "UI", c.study),
		str(tagSeriesUID, "UI", c.series+`\`+c.series+".7"),
	}
	c.extra = append(c.extra,
		sq(0x00081115, []el{str(tagSeriesUID, "UI", c.series)}), // ReferencedSeriesSequence
		sq(0x00400275, []el{sq(0x00081199, ref)}),
	)
	g := gen{ts: ts, sopClass: CTImageStorage, instance: c.instance, undefSeq: true}
	es := ctElems(g.syntax(), c)
	// ctElems has a (0008,1199) and a (0040,0275) of its own: keep ours.
	var out []el
	seen := map[Tag]bool{}
	for i := len(es) - 1; i >= 0; i-- {
		if !seen[es[i].tag] {
			out = append([]el{es[i]}, out...)
		}
		seen[es[i].tag] = true
	}
	out2 := out[:0]
	for _, e := range out {
		if e.tag == 0x00081199 {
			e = sq(0x00081199, ref)
		}
		out2 = append(out2, e)
	}
	return g.file(out2)
}

// One UID mapping for the group: a reference to the file's own series,
// study or instance, at any depth, is rewritten to what the top level gets,
// also when the top-level series is forced from the group's key.
func TestRewriteReferencesFollowTopLevel(t *testing.T) {
	keepRefs, err := ParseProcedure([]byte(`{"version": "9", "sopClass": {"` + CTImageStorage + `": {"default": "K", "tag": {
		"(0008,0018)": {"default": "U"}, "(0008,1155)": {"default": "U"},
		"(0020,000D)": {"default": "U"}, "(0020,000E)": {"default": "U"},
		"(0020,0052)": {"default": "U"}, "(0010,0010)": {"default": "D"}, "(0010,0020)": {"default": "Z"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := ctSpec{study: "1.2.826.6", series: "1.2.826.6.1", instance: "1.2.826.6.1.1", number: 1}
	for _, forced := range []bool{false, true} {
		for name, proc := range map[string]*Procedure{"embedded procedure": nil, "references kept": keepRefs} {
			for _, ts := range []string{TSExplicitLE, TSImplicitLE} {
				t.Run(fmt.Sprintf("%s forced %v %s", name, forced, ts), func(t *testing.T) {
					var opts []Option
					if proc != nil {
						opts = append(opts, WithProcedure(proc))
					}
					if forced {
						opts = append(opts, WithSeriesKey("dicom:dir/"+c.study+"/"+c.series+"/"+CTImageStorage))
					}
					d := testDeidentifier(t, opts...)
					in := refFile(t, ts, c)
					out, res := rewrite(t, d, in)
					_, got := dump(t, out)
					series := text(got["(0020,000E)"])
					if forced && series != d.SeriesUID() {
						t.Errorf("top-level series %q, want the forced %q", series, d.SeriesUID())
					}
					if res.SeriesInstanceUID != series {
						t.Errorf("Result.SeriesInstanceUID %q, wrote %q", res.SeriesInstanceUID, series)
					}
					ref := "(0040,0275)[0](0008,1199)[0]"
					if proc == nil {
						// The embedded procedure removes (0040,0275) and
						// (0008,1115); (0008,1199) is kept.
						ref = "(0008,1199)[0]"
					} else if v := text(got["(0008,1115)[0](0020,000E)"]); v != series {
						t.Errorf("ReferencedSeriesSequence > SeriesInstanceUID %q, want the top level's %q", v, series)
					}
					if v, want := text(got[ref+"(0020,000E)"]), series+`\`+d.UID(c.series+".7"); v != want {
						t.Errorf("nested series reference %q, want %q", v, want)
					}
					if v, want := text(got[ref+"(0020,000D)"]), text(got["(0020,000D)"]); v != want {
						t.Errorf("nested study reference %q, want the top level's %q", v, want)
					}
					if v, want := text(got[ref+"(0008,1155)"]), text(got["(0008,0018)"]); v != want {
						t.Errorf("nested instance reference %q, want the top level's %q", v, want)
					}
					for _, uid := range []string{c.study, c.series, c.instance} {
						if bytes.Contains(out, []byte(uid)) {
							t.Errorf("output holds original UID %q", uid)
						}
					}
				})
			}
		}
	}
}

// A source that cannot seek is read ahead up to its SeriesInstanceUID in
// memory, within a bound; past it, a forced series fails rather than leave
// references that do not resolve.
func TestRewriteLookAheadBound(t *testing.T) {
	c := ctSpec{study: "1.2.826.8", series: "1.2.826.8.1", instance: "1.2.826.8.1.1", number: 1,
		extra: []el{raw(0x00091002, "OB", make([]byte, maxLookAhead))}}
	in := ctFile(t, TSExplicitLE, false, c)
	d := testDeidentifier(t, WithSeriesKey("k"))
	if _, err := d.Rewrite(io.Discard, bytes.NewReader(in)); err != nil {
		t.Errorf("from a seeker: %v", err)
	}
	_, err := d.Rewrite(io.Discard, io.MultiReader(bytes.NewReader(in)))
	var fe *FormatError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), "reading ahead") {
		t.Errorf("from a stream: %v, want a FormatError on reading ahead", err)
	}
}

// dummyVRs are attributes of every VR, in tag order; none was in the small
// table that gave implicit VR its VRs before the dictionary.
func dummyVRs(s syntax) []el {
	es := []el{
		str(0x00080006, "SQ", ""), // replaced below
		str(0x00080012, "DA", "20240229"),
		str(0x00080013, "TM", "235959"),
		str(0x00080014, "UI", "1.2.826.9.9"),
		str(0x00080015, "DT", "20240229235959"),
		str(0x00080054, "AE", secretAETitle),
		str(0x00080081, "ST", secretInstitution),
		raw(0x00080301, "US", us(s, 9)),
		raw(0x00080309, "UL", ul(s, 9)),
		str(0x0008010E, "UR", "http://secret.example/"+secretName),
		str(0x00080119, "UC", secretCodeValue),
		str(0x0008030E, "UT", secretNested),
		str(0x00081160, "IS", "12"),
		raw(0x00081163, "FD", make([]byte, 16)),
		str(0x00082130, "DS", "1.5"),
		raw(0x00089459, "FL", make([]byte, 4)),
		str(0x00090010, "LO", "ACME PRIVATE"),
		str(0x00091001, "LO", secretPrivate),
		str(0x00101010, "AS", "077Y"),
		str(0x00102155, "LT", secretName),
		raw(0x00181638, "OF", make([]byte, 8)),
		raw(0x00186020, "SL", ul(s, 7)),
		raw(0x00189219, "SS", us(s, 7)),
		raw(0x00209165, "AT", ul(s, 0x00100010)),
		raw(0x00282000, "OB", []byte("ICC-PROFILE!")),
		raw(0x00281201, "OW", make([]byte, 6)),
		raw(0x00720073, "OD", make([]byte, 8)),
		raw(0x00720075, "OL", make([]byte, 4)),
		raw(0x00720081, "OV", make([]byte, 8)),
		raw(0x00720082, "SV", make([]byte, 8)),
		raw(0x00720083, "UV", make([]byte, 8)),
	}
	es[0] = sq(0x00080006, []el{str(0x00080100, "SH", secretCodeValue), str(0x00080104, "LO", secretName)})
	sortEls(es)
	return es
}

// Every element of a sequence the procedure replaces by dummies (here
// InstitutionCodeSequence, D) gets a dummy valid for its VR, in implicit
// VR too, where the VR comes from the dictionary: text of the VR's form,
// binary values of the VR's size, an unknown private attribute empty.
func TestRewriteDummiesPerVR(t *testing.T) {
	want := map[Tag]string{
		0x00080012: "20000101", 0x00080013: "120000.000000", 0x00080014: "1.2.3.4.5.6.7.8.9.0.1.2.3.4.5.6.7.8.9.0",
		0x00080015: "20000101120000.000000", 0x00080054: "DUMMY_AE", 0x00080081: "DUMMY SHORT TEXT",
		0x0008010E: "http://dummy.example.test", 0x00080119: "DUMMY UNLIMITED CHARACTERS", 0x0008030E: "DUMMY UNLIMITED TEXT",
		0x00081160: "0", 0x00082130: "0.0", 0x00090010: "DUMMY_LONG_STRING", 0x00101010: "030Y", 0x00102155: "DUMMY LONG TEXT",
	}
	size := map[Tag]int{
		0x00080301: 2, 0x00080309: 4, 0x00081163: 8, 0x00089459: 4, 0x00181638: 4, 0x00186020: 4, 0x00189219: 2,
		0x00209165: 4, 0x00282000: 2, 0x00281201: 2, 0x00720073: 8, 0x00720075: 4, 0x00720081: 8, 0x00720082: 8, 0x00720083: 8,
	}
	for _, ts := range syntaxes {
		t.Run(ts.name, func(t *testing.T) {
			s, _ := syntaxOf(ts.ts)
			c := ctSpec{study: "1.2.826.9", series: "1.2.826.9.1", instance: "1.2.826.9.1.1", number: 1}
			if ts.encapsulated {
				c.frags = [][]byte{nil, []byte("JPEG")}
			}
			es := ctElems(s, c)
			for i, e := range es {
				if e.tag == 0x00080082 {
					es[i] = sq(0x00080082, dummyVRs(s))
				}
			}
			g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: c.instance, undefSeq: true}
			out, _ := rewrite(t, testDeidentifier(t), g.file(es))
			_, got := dump(t, out)
			item := "(0008,0082)[0]"
			for tag, w := range want {
				if v := text(got[item+tag.String()]); v != w {
					t.Errorf("%s = %q, want %q", tag, v, w)
				}
			}
			for tag, n := range size {
				if v := got[item+tag.String()].value; len(v) != n || !bytes.Equal(v, make([]byte, n)) {
					t.Errorf("%s = %v, want %d zero bytes", tag, v, n)
				}
			}
			if v := text(got[item+"(0008,0006)[0](0008,0100)"]); v != "DUMMY" {
				t.Errorf("code value in a nested sequence = %q, want DUMMY", v)
			}
			priv := got[item+"(0009,1001)"]
			if s.implicit && len(priv.value) != 0 {
				t.Errorf("private attribute of unknown VR = %q, want empty", priv.value)
			}
			if !s.implicit && text(priv) != "DUMMY_LONG_STRING" {
				t.Errorf("private LO = %q, want the LO dummy", priv.value)
			}
			for _, sec := range secrets {
				if bytes.Contains(out, []byte(sec)) {
					t.Errorf("output holds %q", sec)
				}
			}
		})
	}
}

// The dictionary gives implicit VR what PS3.6 says, including group
// lengths, private creators, repeating groups and element ranges.
func TestDictVR(t *testing.T) {
	for tag, want := range map[Tag]string{
		0x00100010: "PN", 0x00080018: "UI", 0x00081199: "SQ", 0x00280106: "US", // US or SS
		0x7FE00010: "OW", 0x60003000: "OW", 0x60023000: "OW", 0x601E0010: "US", 0x50000010: "US",
		0x00203102: "CS", 0x00080000: "UL", 0x00290000: "UL", 0x00090010: "LO", 0x004100FF: "LO",
		0x00091001: "", 0x60013000: "", 0x00020010: "UI", 0x30020110: "SQ", 0xFFFEE000: "",
	} {
		if got := dictVR(tag); got != want {
			t.Errorf("dictVR(%s) = %q, want %q", tag, got, want)
		}
	}
	for i := 1; i < len(dictTags); i++ {
		if dictTags[i-1].tag >= dictTags[i].tag {
			t.Fatalf("dictTags not sorted at %d: %s then %s", i, dictTags[i-1].tag, dictTags[i].tag)
		}
	}
}
