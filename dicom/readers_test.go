package dicom

import (
	"bytes"
	"compress/flate"
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
