package dicom

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strings"
	"testing"
)

func testDeidentifier(tb testing.TB, opts ...Option) *Deidentifier {
	tb.Helper()
	d, err := NewDeidentifier([]byte("a test secret of enough bytes"), opts...)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func rewrite(tb testing.TB, d *Deidentifier, in []byte) ([]byte, Result) {
	tb.Helper()
	var out bytes.Buffer
	res, err := d.Rewrite(&out, bytes.NewReader(in))
	if err != nil {
		tb.Fatalf("Rewrite: %v", err)
	}
	if res.Written != int64(out.Len()) {
		tb.Errorf("Result.Written = %d, wrote %d", res.Written, out.Len())
	}
	checkReaders(tb, in, out.Bytes())
	return out.Bytes(), res
}

// text is an element's value without padding.
func text(d dumped) string { return strings.TrimRight(string(d.value), "\x00 ") }

var uidPattern = regexp.MustCompile(`^2\.25\.[1-9][0-9]{0,38}$`)

// TestRewriteActions checks one attribute of each action class of the
// embedded procedure, in every transfer syntax, with sequences of defined
// and undefined length.
func TestRewriteActions(t *testing.T) {
	for _, ts := range syntaxes {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				s, _ := syntaxOf(ts.ts)
				c := ctSpec{study: "1.2.826.7.1", series: "1.2.826.7.1.2", instance: "1.2.826.7.1.2.3", number: 3,
					extra: []el{
						str(0x00120063, "LO", "EARLIER METHOD"),            // K, extended
						str(0x0040A121, "DA", "20200202"),                  // D on DA
						raw(0x300A0602, "US", us(s, 77)),                   // D on US
						sq(0x30020110, []el{str(0x00080100, "SH", "X")}),   // Z on a sequence
						str(0x00120062, "CS", "NO"),                        // replaced by YES
						str(0x00280301, "CS", "NO"),                        // X, after the burned-in check
						raw(0x60000010, "US", us(s, 512)),                  // X through (60XX,0010)
						str(0x00181020, "LO", "SECRET SOFTWARE VERSION 1"), // Z on LO: empty
					}}
				if ts.encapsulated {
					c.frags = [][]byte{{}, []byte("FRAG-ONE"), []byte("FRAG-TWO!!")}
				}
				in := ctFile(t, ts.ts, undef, c)
				d := testDeidentifier(t)
				out, res := rewrite(t, d, in)
				meta, got := dump(t, out)

				check := func(path, want string) {
					t.Helper()
					g, ok := got[path]
					if !ok {
						t.Errorf("%s missing, want %q", path, want)
						return
					}
					if text(g) != want {
						t.Errorf("%s = %q, want %q", path, text(g), want)
					}
				}
				absent := func(path string) {
					t.Helper()
					if g, ok := got[path]; ok {
						t.Errorf("%s = %q, want it removed", path, g.value)
					}
				}

				// X: removed, at the top level and in a kept sequence; a
				// removed sequence takes its items with it.
				absent("(0008,0012)")
				absent("(0008,103E)")
				absent("(0009,0010)")
				absent("(0009,1001)")
				absent("(0028,0301)")
				absent("(6000,0010)")
				absent("(0040,0275)")
				absent("(0040,0275)[0](0040,0007)")
				// K: kept, and a kept sequence's items cleaned by the same rules.
				check("(0008,0060)", "CT")
				check("(0008,0070)", "ACME Scanners")
				check("(0018,0050)", "1.25")
				check("(0020,0013)", "3")
				check("(0008,1199)[0](0008,1150)", CTImageStorage)
				check("(0008,1199)[0](0010,0010)", "DUMMY^PATIENT^^^") // Z on PN inside
				check("(0008,1199)[0](0040,A043)[0](0008,0100)", "121")
				check("(0008,1199)[0](0040,A043)[0](0010,0020)", "DUMMY_LONG_STRING") // D two levels down
				check("(0012,0063)", `EARLIER METHOD\`+d.Method())
				if ts.encapsulated {
					if g := got["(7FE0,0010)"]; string(g.value) != "FRAG-ONEFRAG-TWO!!" || g.items != 3 {
						t.Errorf("pixel data fragments = %q in %d items, want the originals in 3", g.value, g.items)
					}
				} else if g := got["(7FE0,0010)"]; !bytes.Equal(g.value, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
					t.Errorf("pixel data = %v, want the original", g.value)
				}
				// D: a dummy of the VR; a D sequence's elements all dummies.
				check("(0008,0080)", "DUMMY_LONG_STRING")
				check("(0010,0020)", "DUMMY_LONG_STRING")
				check("(0020,0012)", "0")
				check("(0040,A121)", "20000101")
				if g := got["(300A,0602)"]; !bytes.Equal(g.value, []byte{0, 0}) {
					t.Errorf("(300A,0602) = %v, want a zero US", g.value)
				}
				check("(0008,0082)[0](0008,0100)", "DUMMY")
				check("(0008,0082)[0](0008,0104)", "DUMMY_LONG_STRING")
				// Z: empty for text VRs, a dummy for the others, no items.
				check("(0008,0050)", "")
				check("(0018,1020)", "")
				check("(0008,0020)", "20000101")
				check("(0008,0030)", "120000.000000")
				check("(0010,0010)", "DUMMY^PATIENT^^^")
				check("(0010,0030)", "20000101")
				check("(0010,0040)", "")
				check("(0020,0011)", "0")
				if g, ok := got["(3002,0110)"]; !ok || g.items != 0 {
					t.Errorf("(3002,0110) = %+v (present %v), want an empty sequence", g, ok)
				}
				// U: a new UID, the same one wherever the original was.
				for _, p := range []string{"(0008,0018)", "(0020,000D)", "(0020,000E)", "(0020,0052)", "(0008,1199)[0](0008,1155)"} {
					if v := text(got[p]); !uidPattern.MatchString(v) {
						t.Errorf("%s = %q, want a 2.25 UID", p, v)
					}
				}
				check("(0008,0018)", d.UID(c.instance))
				check("(0020,000D)", d.UID(c.study))
				check("(0020,000E)", d.UID(c.series))
				check("(0008,1199)[0](0008,1155)", d.UID(c.instance+".99"))
				if got, want := meta.get(tagMediaSOPInstance), d.UID(c.instance); got != want {
					t.Errorf("MediaStorageSOPInstanceUID = %q, want %q (the mapped SOPInstanceUID)", got, want)
				}
				if res.SOPInstanceUID != d.UID(c.instance) || res.StudyInstanceUID != d.UID(c.study) || res.SeriesInstanceUID != d.UID(c.series) {
					t.Errorf("Result UIDs %+v do not match what was written", res)
				}
				// Added, as Grand Challenge's clients do.
				check("(0012,0062)", "YES")
				if got := meta.get(tagTransferSyntax); got != ts.ts {
					t.Errorf("transfer syntax %q, want %q", got, ts.ts)
				}
				if _, ok := meta.raw(0x00020016); ok {
					t.Errorf("meta (0002,0016) source AE title kept")
				}
				for _, sec := range secrets {
					if bytes.Contains(out, []byte(sec)) {
						t.Errorf("output holds %q", sec)
					}
				}
				for _, uid := range []string{c.study, c.series, c.instance} {
					if bytes.Contains(out, []byte(uid)) {
						t.Errorf("output holds original UID %q", uid)
					}
				}
				// The output reads as DICOM, with the new UIDs.
				h, err := Verify(bytes.NewReader(out))
				if err != nil {
					t.Fatalf("Verify of the output: %v", err)
				}
				if h.SeriesInstanceUID != d.UID(c.series) || h.SOPClassUID != CTImageStorage {
					t.Errorf("output header %+v", h)
				}
			})
		}
	}
}

func TestRewriteAddsWhenAbsent(t *testing.T) {
	d := testDeidentifier(t)
	out, _ := rewrite(t, d, ctFile(t, TSExplicitLE, false, ctSpec{study: "1.2", series: "1.2.3", instance: "1.2.3.4"}))
	_, got := dump(t, out)
	if v := text(got["(0012,0062)"]); v != "YES" {
		t.Errorf("PatientIdentityRemoved = %q, want YES", v)
	}
	if v := text(got["(0012,0063)"]); v != d.Method() || !strings.Contains(v, "0.20250708.0") {
		t.Errorf("DeidentificationMethod = %q, want %q naming the procedure version", v, d.Method())
	}
}

// Several files of one series: new UIDs differ from the originals, agree
// across the series, and the same input gives the same bytes.
func TestRewriteSeriesConsistent(t *testing.T) {
	d := testDeidentifier(t)
	var series, study string
	for i := 1; i <= 3; i++ {
		c := ctSpec{study: "1.3.6.1.4.1.5", series: "1.3.6.1.4.1.5.1", instance: fmt.Sprintf("1.3.6.1.4.1.5.1.%d", i), number: i}
		in := ctFile(t, TSExplicitLE, true, c)
		out, res := rewrite(t, d, in)
		again, _ := rewrite(t, d, in)
		if !bytes.Equal(out, again) {
			t.Errorf("file %d: two rewrites differ", i)
		}
		if other, _ := rewrite(t, testDeidentifier(t, WithSeriesKey("k")), in); bytes.Equal(other, out) {
			t.Errorf("file %d: forcing the series changed nothing", i)
		}
		if res.SeriesInstanceUID == c.series || res.StudyInstanceUID == c.study || res.SOPInstanceUID == c.instance {
			t.Errorf("file %d: a UID was kept: %+v", i, res)
		}
		if i == 1 {
			series, study = res.SeriesInstanceUID, res.StudyInstanceUID
		} else if res.SeriesInstanceUID != series || res.StudyInstanceUID != study {
			t.Errorf("file %d: series %s study %s, want %s %s as file 1", i, res.SeriesInstanceUID, res.StudyInstanceUID, series, study)
		}
	}
	d2, err := NewDeidentifier([]byte("another secret, also long enough"))
	if err != nil {
		t.Fatal(err)
	}
	if d2.UID("1.2.3") == d.UID("1.2.3") {
		t.Errorf("two secrets give the same UID")
	}
}

// WithSeriesKey gives the files of one group (here a 4D set: three series
// sharing a StackID) one SeriesInstanceUID.
func TestRewriteWithSeriesKey(t *testing.T) {
	d := testDeidentifier(t).WithSeriesKey("1.2.9|STACK|" + CTImageStorage)
	var first string
	for i := 1; i <= 3; i++ {
		c := ctSpec{study: "1.2.9", series: fmt.Sprintf("1.2.9.%d", i), instance: fmt.Sprintf("1.2.9.%d.1", i), stackID: "STACK"}
		out, res := rewrite(t, d, ctFile(t, TSImplicitLE, false, c))
		_, got := dump(t, out)
		if v := text(got["(0020,000E)"]); v != d.SeriesUID() || res.SeriesInstanceUID != v {
			t.Errorf("file %d: series %q (result %q), want the forced %q", i, v, res.SeriesInstanceUID, d.SeriesUID())
		}
		if first == "" {
			first = d.SeriesUID()
		}
		if _, ok := got["(0020,9056)"]; ok {
			t.Errorf("file %d: StackID kept; the procedure removes it", i)
		}
	}
	// A file without a series gets the forced one.
	g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.5"}
	out, _ := rewrite(t, d, g.file([]el{str(tagSOPClass, "UI", CTImageStorage), str(tagSOPInstance, "UI", "1.5")}))
	if _, got := dump(t, out); text(got["(0020,000E)"]) != first {
		t.Errorf("file without a series: %q, want %q", text(got["(0020,000E)"]), first)
	}
}

func TestRewriteRejects(t *testing.T) {
	custom, err := ParseProcedure([]byte(`{"version": "0.1.0", "default": "R", "justification": "Unsupported SOP Class",
		"sopClass": {"1.2.840.10008.5.1.4.1.1.2": {"default": "X", "justification": "x", "tag": {
			"(0008,0016)": {"default": "K", "justification": "k"},
			"(0010,0010)": {"default": "R", "justification": "Patient names are not allowed here"}}}}}`))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		d        *Deidentifier
		in       []byte
		wantTag  Tag
		wantJust string
	}{
		{"unknown SOP class", testDeidentifier(t),
			ctFile(t, TSExplicitLE, false, ctSpec{sopClass: "1.2.840.10008.5.1.4.1.1.4", study: "1.2", series: "1.2.3", instance: "1.2.3.4"}),
			0, "Unsupported SOP Class"},
		{"dose report in a CT folder", testDeidentifier(t),
			ctFile(t, TSExplicitLE, false, ctSpec{sopClass: "1.2.840.10008.5.1.4.1.1.88.67", study: "1.2", series: "1.2.3", instance: "1.2.3.4"}),
			0, "Unsupported SOP Class"},
		{"burned in", testDeidentifier(t),
			ctFile(t, TSImplicitLE, true, ctSpec{burnedIn: "YES", study: "1.2", series: "1.2.3", instance: "1.2.3.4"}),
			tagBurnedInAnnotation, "DICOM file contains burned in annotations"},
		{"burned in, lower case", testDeidentifier(t),
			ctFile(t, TSExplicitBE, false, ctSpec{burnedIn: "yes", study: "1.2", series: "1.2.3", instance: "1.2.3.4"}),
			tagBurnedInAnnotation, "DICOM file contains burned in annotations"},
		{"attribute R", testDeidentifier(t, WithProcedure(custom)),
			ctFile(t, TSExplicitLE, false, ctSpec{study: "1.2", series: "1.2.3", instance: "1.2.3.4"}),
			0x00100010, "Patient names are not allowed here"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.d.Rewrite(io.Discard, bytes.NewReader(tt.in))
			var re *RejectError
			if !errors.As(err, &re) {
				t.Fatalf("got %v, want a *RejectError", err)
			}
			if re.Tag != tt.wantTag || !strings.Contains(re.Justification, tt.wantJust) {
				t.Errorf("got tag %s justification %q, want %s %q", re.Tag, re.Justification, tt.wantTag, tt.wantJust)
			}
		})
	}
}

func TestRewriteRefusesBrokenInput(t *testing.T) {
	g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.2"}
	tests := map[string][]byte{
		"out of order":                g.file([]el{str(tagSOPClass, "UI", CTImageStorage), str(0x00080008, "CS", "A")}),
		"no SOP class":                g.file([]el{str(0x00080060, "CS", "CT")}),
		"SOP class differs from meta": g.file([]el{str(tagSOPClass, "UI", "1.2.840.10008.5.1.4.1.1.4")}),
		"not DICOM":                   []byte("plain text, not DICOM at all"),
	}
	d := testDeidentifier(t)
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := d.Rewrite(io.Discard, bytes.NewReader(in))
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Errorf("got %v, want a *FormatError", err)
			}
		})
	}
}

func TestNewDeidentifierShortSecret(t *testing.T) {
	if _, err := NewDeidentifier([]byte("short")); err == nil {
		t.Error("a 5-byte secret was accepted")
	}
}

// Every attribute the embedded procedure replaces has a VR in the
// dictionary, so that implicit VR files get the right dummy.
func TestDictCoversProcedure(t *testing.T) {
	p, err := DefaultProcedure()
	if err != nil {
		t.Fatal(err)
	}
	if p.Version != "0.20250708.0" && testing.Verbose() {
		t.Logf("procedure version %s", p.Version)
	}
	if !p.Accepts(CTImageStorage) || p.Accepts("1.2.840.10008.5.1.4.1.1.4") {
		t.Errorf("Accepts: want CT only")
	}
	for uid, c := range p.SOPClass {
		for tag, r := range c.Tags {
			switch r.Action {
			case Dummy, Empty, NewUID:
				if dictVR(tag) == "" {
					t.Errorf("SOP class %s: %s has action %s but no VR in the dictionary", uid, tag, r.Action)
				}
			}
		}
	}
}

func TestParseProcedureErrors(t *testing.T) {
	for name, j := range map[string]string{
		"not json":       `{`,
		"clean action":   `{"sopClass": {"1.2": {"tag": {"(0010,0010)": {"default": "C"}}}}}`,
		"unknown action": `{"sopClass": {"1.2": {"tag": {"(0010,0010)": {"default": "Q"}}}}}`,
		"bad tag":        `{"sopClass": {"1.2": {"tag": {"(10,0010)": {"default": "X"}}}}}`,
		"bad default":    `{"default": "X", "sopClass": {}}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseProcedure([]byte(j)); err == nil {
				t.Error("no error")
			}
		})
	}
}

// An explicit VR file may hold a sequence as UN (written by software that
// did not know the attribute), of defined or undefined length: its items
// are implicit VR and are cleaned all the same. In little endian it is
// written back as the SQ it is, its items in explicit VR with the
// dictionary's VRs; in big endian it stays UN, since its items are little
// endian.
func TestRewriteUNSequence(t *testing.T) {
	for _, ts := range []struct{ ts, wantVR string }{{TSExplicitLE, "SQ"}, {TSExplicitBE, "UN"}} {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.ts, undef), func(t *testing.T) {
				g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: "1.2", undefSeq: undef}
				in := g.file([]el{
					str(tagSOPClass, "UI", CTImageStorage),
					{tag: 0x00081199, vr: "UN", items: [][]el{{
						str(0x00081150, "UI", CTImageStorage),
						str(0x00081155, "UI", "1.2.777.888"),
						raw(0x00081160, "IS", []byte("12")),
						str(0x00100010, "PN", secretName),
					}}},
				})
				d := testDeidentifier(t)
				var out []byte
				if ts.ts == TSExplicitBE {
					// Not rewrite: dciodvfy reads the items of a UN
					// sequence in the file's byte order, where PS3.5 6.2.2
					// keeps them little endian, as we write them.
					var b bytes.Buffer
					if _, err := d.Rewrite(&b, bytes.NewReader(in)); err != nil {
						t.Fatal(err)
					}
					out = b.Bytes()
				} else {
					out, _ = rewrite(t, d, in)
				}
				_, got := dump(t, out)
				if v := got["(0008,1199)"].vr; v != ts.wantVR {
					t.Errorf("sequence written as %s, want %s", v, ts.wantVR)
				}
				if v := text(got["(0008,1199)[0](0008,1155)"]); v != d.UID("1.2.777.888") {
					t.Errorf("UID in a UN sequence = %q, want %q", v, d.UID("1.2.777.888"))
				}
				if v := text(got["(0008,1199)[0](0008,1160)"]); v != "12" {
					t.Errorf("kept value in a UN sequence = %q, want 12", v)
				}
				for _, sec := range []string{"1.2.777.888", secretName} {
					if bytes.Contains(out, []byte(sec)) {
						t.Errorf("output holds %q", sec)
					}
				}
			})
		}
	}
}

func TestCheckGroupKey(t *testing.T) {
	h := Header{StudyInstanceUID: "1", SeriesInstanceUID: "2", SOPClassUID: "3"}
	if err := h.CheckGroupKey(); err != nil {
		t.Errorf("complete key: %v", err)
	}
	h.SeriesInstanceUID, h.StackID, h.StackIDTopLevel = "", "S", true
	if err := h.CheckGroupKey(); err == nil {
		t.Errorf("no series but a StackID: no error, want one as panimg fails")
	}
}

// Same input and secret, same bytes, in every syntax (deflate included),
// whether the source can seek or not.
func TestRewriteDeterministic(t *testing.T) {
	d := testDeidentifier(t)
	for _, ts := range syntaxes {
		t.Run(ts.name, func(t *testing.T) {
			c := ctSpec{study: "1.2.5", series: "1.2.5.1", instance: "1.2.5.1.1", pixels: make([]byte, 200<<10)}
			if ts.encapsulated {
				c.frags = [][]byte{nil, make([]byte, 100<<10), make([]byte, 4)}
			}
			in := ctFile(t, ts.ts, true, c)
			a, _ := rewrite(t, d, in)
			var b bytes.Buffer
			if _, err := d.Rewrite(&b, io.MultiReader(bytes.NewReader(in))); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a, b.Bytes()) {
				t.Errorf("two rewrites of the same file differ")
			}
		})
	}
}

// DeidentificationMethod ends with this rewrite's method whatever the
// procedure does with an earlier one.
func TestRewriteMethodUnderOtherRules(t *testing.T) {
	for action, want := range map[string]string{
		"K": `EARLIER\` + "M",
		"X": "M",
		"D": `DUMMY_LONG_STRING\` + "M",
		"Z": "M",
	} {
		t.Run(action, func(t *testing.T) {
			p, err := ParseProcedure([]byte(`{"version": "9", "sopClass": {"` + CTImageStorage + `": {"default": "K", "tag": {
				"(0012,0063)": {"default": "` + action + `", "justification": "j"}}}}}`))
			if err != nil {
				t.Fatal(err)
			}
			d := testDeidentifier(t, WithProcedure(p))
			g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.2"}
			out, _ := rewrite(t, d, g.file([]el{str(tagSOPClass, "UI", CTImageStorage), str(tagDeidentMethod, "LO", "EARLIER")}))
			_, got := dump(t, out)
			if v := strings.ReplaceAll(text(got["(0012,0063)"]), d.Method(), "M"); v != want {
				t.Errorf("DeidentificationMethod = %q, want %q", v, want)
			}
		})
	}
}
