package dicom

import (
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Independent readers of what the rewriter writes: dcmtk's dcmdump and
// dicom3tools' dciodvfy (Debian packages dcmtk and dicom3tools; .ci/run
// installs them). Our own dump only proves we agree with ourselves.

var missingOnce sync.Map

// readerTool returns the path of tool, or "" when it is missing on a
// developer's machine (logged once); under CI=true a missing tool fails.
func readerTool(tb testing.TB, tool string) string {
	tb.Helper()
	path, err := exec.LookPath(tool)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s not installed (Debian: dcmtk, dicom3tools); CI must check de-identified files with it", tool)
	}
	if _, seen := missingOnce.LoadOrStore(tool, true); !seen {
		tb.Logf("%s not installed: de-identified files are not checked by it here (CI checks them)", tool)
	}
	return ""
}

// needReaders skips a test that is about the independent readers when one
// is missing outside CI.
func needReaders(tb testing.TB) {
	tb.Helper()
	for _, tool := range []string{"dcmdump", "dciodvfy"} {
		if readerTool(tb, tool) == "" {
			tb.Skipf("%s not installed (Debian: dcmtk, dicom3tools)", tool)
		}
	}
}

// checkReaders writes in and its rewrite out to a temporary folder and has
// both readers read out: dcmdump must parse it all with no error or
// warning, and dciodvfy must report no error or warning about out that it
// did not report about in (test inputs are not complete CT images, so
// their missing attributes are the input's, not the rewrite's), except
// its notes on what a DICOMDIR would need.
func checkReaders(tb testing.TB, in, out []byte) {
	tb.Helper()
	dir := tb.TempDir()
	inPath, outPath := filepath.Join(dir, "in.dcm"), filepath.Join(dir, "out.dcm")
	if err := os.WriteFile(inPath, in, 0o600); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(outPath, out, 0o600); err != nil {
		tb.Fatal(err)
	}
	if dcmdump := readerTool(tb, "dcmdump"); dcmdump != "" {
		got, err := exec.Command(dcmdump, "+E", outPath).CombinedOutput()
		if err != nil {
			tb.Errorf("dcmdump +E of the rewritten file: %v\n%s", err, got)
		}
		for _, l := range strings.Split(string(got), "\n") {
			if strings.Contains(l, "(CP-246)") {
				// An implicit VR sequence in a UN of undefined length,
				// as PS3.5 6.2.2 has it; the input had its UN.
				continue
			}
			if strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "W:") || strings.HasPrefix(l, "F:") {
				tb.Errorf("dcmdump of the rewritten file: %s", l)
			}
		}
	}
	if dciodvfy := readerTool(tb, "dciodvfy"); dciodvfy != "" {
		// dciodvfy cannot inflate: it reads deflated files as inflated
		// explicit VR little endian ones, the data set bytes unchanged.
		if inf := inflated(tb, in); inf != nil {
			if err := os.WriteFile(inPath, inf, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		if inf := inflated(tb, out); inf != nil {
			if err := os.WriteFile(outPath, inf, 0o600); err != nil {
				tb.Fatal(err)
			}
		}
		before := dciodvfyReport(tb, dciodvfy, inPath)
		for l := range dciodvfyReport(tb, dciodvfy, outPath) {
			if strings.Contains(l, "needed to build DICOMDIR") {
				// A value the procedure empties, such as Study ID: a
				// note for media, not an error in the file.
				continue
			}
			if !before[l] {
				tb.Errorf("dciodvfy of the rewritten file, not of its input: %s", l)
			}
		}
	}
}

// inflated returns a deflated file as explicit VR little endian: the meta
// group with that transfer syntax, then the inflated data set. It returns
// nil for a file in any other transfer syntax.
func inflated(tb testing.TB, b []byte) []byte {
	tb.Helper()
	in := newInput(bytes.NewReader(b))
	if err := in.readPrefix(); err != nil {
		tb.Fatal(err)
	}
	meta, err := readMeta(in)
	if err != nil {
		tb.Fatal(err)
	}
	if meta.get(tagTransferSyntax) != TSDeflatedLE {
		return nil
	}
	ds, err := io.ReadAll(flate.NewReader(bytes.NewReader(b[in.off:])))
	if err != nil {
		tb.Fatalf("inflate: %v", err)
	}
	var mb []byte
	for _, e := range meta.elems {
		if e.tag == tagTransferSyntax {
			e.value = []byte(TSExplicitLE)
		}
		mb = encode(mb, explicitLE, el{tag: e.tag, vr: e.vr, val: e.value}, false)
	}
	out := append(b[:preambleLen:preambleLen], "DICM"...)
	out = appendHeader(out, explicitLE, tagMetaGroupLength, "UL", 4)
	out = explicitLE.order().AppendUint32(out, uint32(len(mb)))
	out = append(out, mb...)
	return append(out, ds...)
}

// dciodvfyReport runs dciodvfy on path and returns its errors and
// warnings. It exits non-zero when it reports errors, so its status says
// nothing; a file it cannot read at all is an error line too.
func dciodvfyReport(tb testing.TB, tool, path string) map[string]bool {
	tb.Helper()
	got, _ := exec.Command(tool, path).CombinedOutput()
	if len(bytes.TrimSpace(got)) == 0 {
		tb.Fatalf("dciodvfy %s printed nothing", path)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(got), "\n") {
		if strings.Contains(l, "Error") || strings.Contains(l, "Warning") {
			lines[strings.TrimSpace(l)] = true
		}
	}
	return lines
}

// TestIndependentReaders rewrites a corpus in every transfer syntax the
// package writes (implicit and explicit VR little endian, big endian,
// deflated, JPEG baseline with fragments), each holding nested sequences
// whose items the procedure dummies, empties and removes, private blocks
// (one a sequence only its value marks as one), attributes of every VR, a
// sequence 40 deep and a UN sequence, and has dcmdump and dciodvfy read
// input and output (rewrite calls checkReaders). The inputs must read
// cleanly too, or the comparison would prove nothing.
func TestIndependentReaders(t *testing.T) {
	needReaders(t)
	for _, ts := range []struct{ name, ts string }{
		{"implicit LE", TSImplicitLE}, {"explicit LE", TSExplicitLE}, {"explicit BE", TSExplicitBE},
		{"deflated", TSDeflatedLE}, {"JPEG baseline", "1.2.840.10008.1.2.4.50"},
	} {
		for _, undef := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s undefined lengths %v", ts.name, undef), func(t *testing.T) {
				g := gen{ts: ts.ts, sopClass: CTImageStorage, instance: "1.2.826.10.1.1", undefSeq: undef}
				s := g.syntax()
				c := ctSpec{study: "1.2.826.10", series: "1.2.826.10.1", instance: g.instance, number: 1,
					extra: []el{
						str(0x00110010, "LO", "OTHER PRIVATE"),
						sq(0x00111001, []el{str(0x00100010, "PN", secretName), str(0x00110010, "LO", "OTHER PRIVATE"), str(0x00111002, "LO", secretPrivate)}),
						str(0x00181020, "LO", "SOFTWARE"),      // Z
						str(0x0040A121, "DA", secretStudyDate), // D
					}}
				if ts.ts == "1.2.840.10008.1.2.4.50" {
					c.frags = [][]byte{nil, []byte("\xff\xd8JPEG-FRAME-ONE\xff\xd9")}
				}
				es := ctElems(s, c)
				for i, e := range es {
					switch e.tag {
					case 0x00080082:
						es[i] = sq(0x00080082, dummyVRs(s))
					case 0x00081199:
						es[i] = nested(40, c.series)
					}
				}
				in := g.file(es)
				readInput(t, in)
				d := testDeidentifier(t)
				out, _ := rewrite(t, d, in)
				for _, sec := range secrets {
					if bytes.Contains(out, []byte(sec)) {
						t.Errorf("output holds %q", sec)
					}
				}
			})
		}
	}
	// An explicit VR file that holds a sequence as UN (written by software
	// that did not know the attribute).
	g := gen{ts: TSExplicitLE, sopClass: CTImageStorage, instance: "1.2.826.11"}
	in := g.file([]el{
		str(tagSOPClass, "UI", CTImageStorage), str(tagSOPInstance, "UI", g.instance),
		{tag: 0x00081199, vr: "UN", items: [][]el{{str(0x00081150, "UI", CTImageStorage), str(0x00100010, "PN", secretName)}}},
	})
	readInput(t, in)
	rewrite(t, testDeidentifier(t), in)
}

// readInput has dcmdump read a test input: it must be valid DICOM for the
// comparison with the output to mean anything.
func readInput(t *testing.T, in []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "in.dcm")
	if err := os.WriteFile(path, in, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := exec.Command(readerTool(t, "dcmdump"), "+E", path).CombinedOutput()
	if err != nil {
		t.Fatalf("dcmdump of the input: %v\n%s", err, got)
	}
	for _, l := range strings.Split(string(got), "\n") {
		if (strings.HasPrefix(l, "E:") || strings.HasPrefix(l, "W:")) && !strings.Contains(l, "(CP-246)") {
			t.Errorf("dcmdump of the input: %s", l)
		}
	}
}
