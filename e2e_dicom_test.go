package main

// End-to-end test of the DICOM storage node: dcmtk's storescu, a peer no
// one here wrote, sends to the real binary's [[dicom]] listener, and what
// lands in the fake archive is checked as a user would: one item per
// series, every instance in it once, nothing of the patient's name.

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/dimse"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
)

// sourcePatient is the name the generated instances carry; de-identified,
// none of it may reach the server.
const sourcePatient = "SOURCE^SECRETNAME"

// needStorescu skips the test when dcmtk is not installed, and fails it
// in CI, where .ci/run installs it.
func needStorescu(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("storescu"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("dcmtk's storescu is missing (Debian package dcmtk): %v", err)
		}
		t.Skipf("dcmtk's storescu is not installed (Debian package dcmtk); skipped: %v", err)
	}
}

// writeCTSeries writes n instances of one CT series (explicit VR little
// endian Part 10 files, pixels bytes of pixel data each) into a new folder
// and returns their paths. tag, digits, makes the UIDs.
func writeCTSeries(t *testing.T, tag string, n, pixels int) []string {
	t.Helper()
	return writeCTSeriesOf(t, tag, "", n, pixels)
}

// writeCTSeriesOf is writeCTSeries for series number series (digits) of
// the study of tag, so that several series share a study; "" is
// writeCTSeries's series.
func writeCTSeriesOf(t *testing.T, tag, series string, n, pixels int) []string {
	t.Helper()
	dir := t.TempDir()
	root := "1.2.826.0.1.3680043.2.1125.77." + tag
	seriesUID, sopRoot := root+".2", root+".3"
	if series != "" {
		seriesUID, sopRoot = seriesUID+"."+series, sopRoot+"."+series
	}
	var paths []string
	for i := 1; i <= n; i++ {
		sop := fmt.Sprintf("%s.%d", sopRoot, i)
		var buf bytes.Buffer
		if _, err := dimse.WriteFileMeta(&buf, dimse.Instance{SOPClassUID: ctImageStorage, SOPInstanceUID: sop, TransferSyntaxUID: dimse.ExplicitVRLittleEndian}); err != nil {
			t.Fatal(err)
		}
		buf.Write(ctDataSet(root+".1", seriesUID, sop, i, pixels))
		p := filepath.Join(dir, fmt.Sprintf("IM%03d.dcm", i))
		if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return paths
}

const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// ctDataSet encodes a CT instance in explicit VR little endian: what the
// grouper and the de-identifier read, a patient's name and ID, then 8-bit
// pixel data of 16 columns.
func ctDataSet(study, series, sop string, number, pixels int) []byte {
	var b []byte
	str := func(g, e uint16, vr, v string) {
		val := []byte(v)
		if len(val)%2 == 1 {
			val = append(val, map[bool]byte{true: 0, false: ' '}[vr == "UI"])
		}
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
		b = append(b, val...)
	}
	us := func(g, e, v uint16) {
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, "US"...)
		b = binary.LittleEndian.AppendUint16(b, 2)
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	rows := pixels / 16
	str(0x0008, 0x0016, "UI", ctImageStorage)
	str(0x0008, 0x0018, "UI", sop)
	str(0x0008, 0x0060, "CS", "CT")
	str(0x0010, 0x0010, "PN", sourcePatient)
	str(0x0010, 0x0020, "LO", "PID-SECRET-4711")
	str(0x0020, 0x000D, "UI", study)
	str(0x0020, 0x000E, "UI", series)
	str(0x0020, 0x0013, "IS", fmt.Sprint(number))
	us(0x0028, 0x0002, 1)
	str(0x0028, 0x0004, "CS", "MONOCHROME2")
	us(0x0028, 0x0010, uint16(rows))
	us(0x0028, 0x0011, 16)
	us(0x0028, 0x0100, 8)
	us(0x0028, 0x0101, 8)
	us(0x0028, 0x0102, 7)
	us(0x0028, 0x0103, 0)
	b = binary.LittleEndian.AppendUint16(b, 0x7FE0)
	b = binary.LittleEndian.AppendUint16(b, 0x0010)
	b = append(b, "OB"...)
	b = append(b, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(rows*16))
	for i := range rows * 16 {
		b = append(b, byte(i*7+number))
	}
	return b
}

// storescu sends files from callingAE to the listener at addr, with
// options (such as +tls) before the address; dcmtk runs with TCP_NODELAY=1
// so that small instances do not wait on delayed ACKs.
func storescu(ctx context.Context, addr, callingAE string, files []string, options ...string) *exec.Cmd {
	host, port, _ := net.SplitHostPort(addr)
	args := append(append([]string{"-aet", callingAE, "-aec", "GCINGEST"}, options...), host, port)
	cmd := exec.CommandContext(ctx, "storescu", append(args, files...)...)
	cmd.Env = append(os.Environ(), "TCP_NODELAY=1")
	return cmd
}

// writeDICOMConfig writes the config of a DICOM test: the status listener
// on statusAddr ("" for none), one watch on the drop folder with
// dicom_settle settle and watchExtra's keys, and tables, [[dicom]] tables
// of dicomTable, which spool into that folder. A settle shorter than a
// pause of the sender splits a series in time, not in the archive: the
// rest makes the same item whole again, later.
func (e *e2eEnv) writeDICOMConfig(statusAddr, settle, watchExtra string, tables ...string) {
	e.t.Helper()
	cfg := fmt.Sprintf(`[grand_challenge]
url = %q
token = %q

[state]
path = %q

[status]
listen = %q

[log]
level = "info"

[[watch]]
path = %q
archive = "e2e"
interface = %q
settle = "200ms"
dicom_settle = %q
rescan = "1s"
%s
`, e.srv.URL, e.srv.Token(), filepath.Join(e.dir, "state", "state.db"), statusAddr, e.drop, e2eInterface, settle, watchExtra)
	if err := os.WriteFile(e.config, []byte(cfg+strings.Join(tables, "\n")), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// dicomTable is a [[dicom]] table listening on listen as GCINGEST, into
// the drop folder, admitting CT1, CT2 and CT3 from the loopback network;
// extra adds keys (the TLS files). Its journal is 16 MiB, room for the
// longest series sent here: the default 256 MiB, written in full at each
// agent's first start, would load the disk the other tests fsync on.
func (e *e2eEnv) dicomTable(listen, extra string) string {
	return fmt.Sprintf(`
[[dicom]]
listen = %q
ae_title = "GCINGEST"
allow = [{ae = "CT1", from = "127.0.0.0/8"}, {ae = "CT2", from = "127.0.0.0/8"}, {ae = "CT3", from = "127.0.0.0/8"}]
spool = %q
journal = "16MiB"
%s
`, listen, e.drop, extra)
}

// startUp starts the agent and waits until it says it is up.
func (e *e2eEnv) startUp() *exec.Cmd {
	e.t.Helper()
	cmd := e.start()
	waitFor(e.t, 30*time.Second, "the agent to be up", func() bool { return strings.Contains(e.logSince(e.started), "agent up") }, e.logTail)
	return cmd
}

// freeAddr returns a loopback address:port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// spooledInstances counts the whole instances in the spool (hidden
// temporary files are not).
func spooledInstances(t *testing.T, spool string) int {
	t.Helper()
	return len(spooledSOPs(spool))
}

// spooledSOPs returns the SOP Instance UIDs of the whole instances in the
// spool, which names each file by its UID, with the number of files of
// each.
func spooledSOPs(spool string) map[string]int {
	out := map[string]int{}
	filepath.WalkDir(spool, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".dcm") && !strings.HasPrefix(d.Name(), ".") {
			out[strings.TrimSuffix(d.Name(), ".dcm")]++
		}
		return nil
	})
	return out
}

// waitSpooled waits until the spool holds want whole instances. The
// receiver answers success once an instance is durable, which need not be
// in the spool yet (it may be in a journal of its own a moment longer).
func (e *e2eEnv) waitSpooled(want int) {
	e.t.Helper()
	waitFor(e.t, 10*time.Second, fmt.Sprintf("the %d instances storescu was told success for in the spool", want), func() bool {
		return spooledInstances(e.t, e.drop) == want
	}, func() string {
		return fmt.Sprintf("the spool holds %d\n%s", spooledInstances(e.t, e.drop), e.logTail())
	})
}

// waitAnsweredSpooled waits until every instance of answered (SOP
// Instance UIDs) is in the spool: what the sender was told success for
// is never lost, whatever stopped after.
func (e *e2eEnv) waitAnsweredSpooled(answered []string) {
	e.t.Helper()
	missing := func() []string {
		in := spooledSOPs(e.drop)
		var out []string
		for _, sop := range answered {
			if in[sop] == 0 {
				out = append(out, sop)
			}
		}
		return out
	}
	waitFor(e.t, 10*time.Second, fmt.Sprintf("the %d instances storescu was told success for in the spool", len(answered)), func() bool {
		return len(missing()) == 0
	}, func() string { return fmt.Sprintf("missing: %v\n%s", missing(), e.logTail()) })
}

// trackedSend is a storescu run whose output is followed: which files it
// was told success for, so far.
type trackedSend struct {
	cmd  *exec.Cmd
	read chan struct{} // closed when its output has ended
	mu   sync.Mutex
	ok   []string
}

// startTracked starts storescu -v, which says which file it sends and
// what the answer was.
func startTracked(t *testing.T, ctx context.Context, addr, callingAE string, files []string) *trackedSend {
	t.Helper()
	s := &trackedSend{cmd: storescu(ctx, addr, callingAE, files, "-v"), read: make(chan struct{})}
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(s.read)
		var sending string
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			line := sc.Text()
			if f, ok := strings.CutPrefix(line, "I: Sending file: "); ok {
				sending = f
			}
			if strings.Contains(line, "Received Store Response (Success)") && sending != "" {
				s.mu.Lock()
				s.ok = append(s.ok, sending)
				s.mu.Unlock()
			}
		}
	}()
	return s
}

// answered returns the files storescu was told success for so far.
func (s *trackedSend) answered() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.ok)
}

// wait waits for storescu to exit and its output to end.
func (s *trackedSend) wait() error {
	<-s.read
	return s.cmd.Wait()
}

// itemInstances returns, per archive item, the instances its image was
// built from (the entries of the ZIP the agent sent), read whole.
func (e *e2eEnv) itemInstances() map[string][][]byte {
	e.t.Helper()
	out := map[string][][]byte{}
	for _, it := range e.srv.Items(e.archive) {
		v := it.Value(e2eInterface)
		if v == nil || v.Image == nil {
			continue
		}
		pk := strings.TrimSuffix(*v.Image, "/")
		pk = pk[strings.LastIndexByte(pk, '/')+1:]
		content, err := e.srv.ImageContent(pk)
		if err != nil {
			e.t.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(content), int64(len(content)))
		if err != nil {
			e.t.Fatalf("item %s: its image is not the ZIP of a series: %v", it.PK, err)
		}
		for _, f := range zr.File {
			rc, err := f.Open()
			if err != nil {
				e.t.Fatal(err)
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				e.t.Fatal(err)
			}
			out[it.PK] = append(out[it.PK], b)
		}
	}
	return out
}

// TestE2EDICOMReceivedSeriesLandsOnce: storescu sends a 50-instance CT
// series to the agent's [[dicom]] listener; it lands as one archive item
// holding every instance once, de-identified (the watch says so). A caller
// not on the allow list is refused and stores nothing. The agent is then
// SIGKILLed in the middle of a second series; after a restart storescu
// sends the whole series again, and it too lands once, whole, in one item.
// check --echo and status see the listener.
func TestE2EDICOMReceivedSeriesLandsOnce(t *testing.T) {
	needStorescu(t)
	e := newE2E(t, gcapitest.Options{}, "")
	dicomAddr, statusAddr := freeAddr(t), freeAddr(t)
	e.writeDICOMConfig(statusAddr, "3s", "deidentify = true", e.dicomTable(dicomAddr, ""))
	const n = 50
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	agent := e.startUp()

	// A whole series, de-identified.
	first := writeCTSeries(t, "1", n, 4096)
	if out, err := storescu(ctx, dicomAddr, "CT1", first).CombinedOutput(); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the series in one archive item", func() bool { return len(e.itemInstances()) == 1 }, e.logTail)

	// A caller not on the allow list.
	if out, err := storescu(ctx, dicomAddr, "INTRUDER", first[:1]).CombinedOutput(); err == nil {
		t.Errorf("storescu from INTRUDER passed; want the association refused\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(e.drop, "INTRUDER")); err == nil {
		t.Error("the spool holds a folder of INTRUDER, which was refused")
	}

	out := runOut(t, "check", "--config", e.config, "--echo")
	if !strings.Contains(out, `dicom[0] C-ECHO from "CT1" to "GCINGEST" at `+dicomAddr+": ok") {
		t.Errorf("check --echo of the running agent says:\n%s", out)
	}
	out = runOut(t, "status", "--config", e.config)
	if want := "dicom GCINGEST on " + dicomAddr + ": 0 associations now, 2 since start, 1 refused; 50 instances"; !strings.Contains(out, want) {
		t.Errorf("status says:\n%s\nwant a line with %q", out, want)
	}

	// A second series, the agent killed in its middle.
	second := writeCTSeries(t, "2", n, 64<<10)
	sender := startTracked(t, ctx, dicomAddr, "CT1", second)
	waitFor(t, 30*time.Second, "the first instance of the second series answered", func() bool {
		return len(sender.answered()) > 0
	}, e.logTail)
	e.kill(agent)
	if err := sender.wait(); err == nil {
		t.Log("storescu sent the whole series before the agent was killed; the test shows less than it should")
	}
	answered := sopsOf(t, sender.answered())
	t.Logf("%d of %d instances of the second series answered success when the agent was killed", len(answered), n)

	// Answered success is durable: after the restart, and before any
	// resend, every such instance is in the spool.
	agent = e.startUp()
	defer e.stop(agent)
	e.waitAnsweredSpooled(answered)
	if out, err := storescu(ctx, dicomAddr, "CT1", second).CombinedOutput(); err != nil {
		t.Fatalf("storescu again: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "the second series in an archive item", func() bool { return len(e.itemInstances()) == 2 }, e.logTail)

	items := e.itemInstances()
	for pk, insts := range items {
		if len(insts) != n {
			t.Errorf("item %s holds %d instances, want the whole series of %d, once each", pk, len(insts), n)
		}
		seen := map[string]bool{}
		for _, b := range insts {
			if bytes.Contains(b, []byte("SECRETNAME")) || bytes.Contains(b, []byte("PID-SECRET")) {
				t.Errorf("item %s: an instance carries the source's patient name or ID, although deidentify = true", pk)
				break
			}
			seen[string(b)] = true
		}
		if len(seen) != len(insts) {
			t.Errorf("item %s holds %d instances of which %d differ: an instance twice", pk, len(insts), len(seen))
		}
	}
	if got := len(e.srv.Items(e.archive)); got != 2 {
		t.Errorf("the archive has %d items, want 2: one per series", got)
	}
}
