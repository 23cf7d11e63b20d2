package dimse

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gcingest/gcingest/dicom"
)

// These tests send to the server with dcmtk's echoscu and storescu, peers
// that no one here wrote, and read what it stored with dcmdump.

// needDCMTK skips the test when dcmtk is not installed, and fails it in CI,
// where .ci/run installs it.
func needDCMTK(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"echoscu", "storescu", "dcmdump"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("dcmtk's %s is missing (Debian package dcmtk): %v", tool, err)
			}
			t.Skipf("dcmtk's %s is not installed (Debian package dcmtk); skipped", tool)
		}
	}
}

// dcmtk runs one of dcmtk's tools and returns its combined output.
// The tools run with TCP_NODELAY=1 (see nodelay): with Nagle's algorithm
// on, storescu waits for a delayed ACK on every small instance, some 50 ms
// each, which only makes the tests slow.
func dcmtk(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = nodelay
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (ts *testServer) storescu(t *testing.T, calling string, extra []string, files ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"-aet", calling, "-aec", "GCINGEST"}, extra...)
	args = append(args, ts.host, ts.port)
	return dcmtk(ctx, "storescu", append(args, files...)...)
}

// checkStored asserts each instance is in the spool exactly once, where
// the layout puts it, and that dcmdump reads it with its SOP instance UID
// and the transfer syntax wanted.
func checkStored(t *testing.T, ts *testServer, calling string, insts []testInstance, wantTS string) {
	t.Helper()
	dcm, other := spooled(t, ts.spool)
	if len(other) != 0 {
		t.Errorf("spool holds files that are not instances: %v", other)
	}
	var paths []string
	for _, ti := range insts {
		got := dcm[ti.sop]
		want := filepath.Join(ts.spool, calling, ti.study, ti.series, ti.sop+".dcm")
		if len(got) != 1 || got[0] != want {
			t.Errorf("instance %s stored as %v, want once as %s", ti.sop, got, want)
			continue
		}
		paths = append(paths, want)
	}
	if len(paths) == 0 {
		return
	}
	out, err := dcmtk(context.Background(), "dcmdump", append([]string{"-q", "-Un", "+P", "0002,0010", "+P", "0008,0018"}, paths...)...)
	if err != nil {
		t.Fatalf("dcmdump: %v\n%s", err, out)
	}
	for _, ti := range insts {
		if !strings.Contains(out, "["+ti.sop+"]") {
			t.Errorf("dcmdump does not show SOP instance UID %s:\n%s", ti.sop, out)
		}
	}
	if n := strings.Count(out, "(0002,0010) UI ["+wantTS+"]"); n != len(paths) {
		t.Errorf("dcmdump shows transfer syntax %s in %d of %d files:\n%s", wantTS, n, len(paths), out)
	}
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		_, err = dicom.Verify(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
}

func TestEchoscu(t *testing.T) {
	needDCMTK(t)
	ts := startServer(t, nil)
	out, err := dcmtk(context.Background(), "echoscu", "-aet", "SCANNER", "-aec", "GCINGEST", ts.host, ts.port)
	if err != nil {
		t.Fatalf("echoscu: %v\n%s", err, out)
	}
	if got := ts.Stats(); got.Total != 1 || got.Refused != 0 {
		t.Errorf("stats %+v, want one association, none refused", got)
	}
}

func TestEchoscuRefused(t *testing.T) {
	needDCMTK(t)
	for _, tc := range []struct {
		name    string
		allow   []Caller
		calling string
		called  string
	}{
		{"caller not on the list", []Caller{{AETitle: "SCANNER"}}, "INTRUDER", "GCINGEST"},
		{"empty allow list", nil, "SCANNER", "GCINGEST"},
		{"another called AE", []Caller{{AETitle: "SCANNER"}}, "SCANNER", "PACS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.Allow = tc.allow })
			out, err := dcmtk(context.Background(), "echoscu", "-aet", tc.calling, "-aec", tc.called, ts.host, ts.port)
			if err == nil {
				t.Fatalf("echoscu succeeded, want a rejection:\n%s", out)
			}
			if !strings.Contains(out, "Association Rejected") {
				t.Errorf("echoscu output does not say the association was rejected:\n%s", out)
			}
			if got := ts.Stats(); got.Refused != 1 || got.Total != 0 {
				t.Errorf("stats %+v, want one refusal", got)
			}
			if got := ts.StatsByCaller()[tc.calling]; got.Refused != 1 {
				t.Errorf("stats of %s %+v, want one refusal", tc.calling, got)
			}
		})
	}
}

func TestStorescu(t *testing.T) {
	needDCMTK(t)
	for _, tc := range []struct {
		name   string
		args   []string
		maxPDU uint32
		wantTS string
	}{
		{"explicit VR little endian", nil, 0, ExplicitVRLittleEndian},
		// storescu converts to implicit VR, which the server then stores.
		{"implicit VR little endian", []string{"-xi"}, 0, ImplicitVRLittleEndian},
		// storescu deflates the data sets itself.
		{"deflated", []string{"-xd"}, 0, DeflatedExplicitVRLittleEndian},
		// The smallest max PDU the server announces: storescu must split
		// each data set into many PDUs, which the server reassembles.
		{"4 KiB PDUs", nil, minMaxPDULength, ExplicitVRLittleEndian},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, func(c *Config) { c.MaxPDULength = tc.maxPDU })
			insts := series("1", 20, 512)
			_, files := writeFiles(t, insts)
			if out, err := ts.storescu(t, "SCANNER", tc.args, files...); err != nil {
				t.Fatalf("storescu: %v\n%s", err, out)
			}
			checkStored(t, ts, "SCANNER", insts, tc.wantTS)

			// Sent again, each instance is still stored once.
			if out, err := ts.storescu(t, "SCANNER", tc.args, files[:5]...); err != nil {
				t.Fatalf("storescu again: %v\n%s", err, out)
			}
			checkStored(t, ts, "SCANNER", insts, tc.wantTS)
			if got := ts.Stats(); got.Instances != 25 || got.Total != 2 {
				t.Errorf("stats %+v, want 25 instances in 2 associations", got)
			}
		})
	}
}

func TestStorescuParallel(t *testing.T) {
	needDCMTK(t)
	ts := startServer(t, func(c *Config) { c.MaxAssociations = 4 })
	const senders = 4
	var all []testInstance
	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i := range senders {
		insts := series(fmt.Sprint(100+i), 15, 4096)
		all = append(all, insts...)
		_, files := writeFiles(t, insts)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
				errs <- fmt.Errorf("storescu %d: %v\n%s", i, err, out)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	checkStored(t, ts, "SCANNER", all, ExplicitVRLittleEndian)
	if got := ts.Stats(); got.Total != senders || got.Instances != int64(len(all)) || got.Current != 0 {
		t.Errorf("stats %+v, want %d associations and %d instances", got, senders, len(all))
	}
	if got, want := ts.StatsByCaller(), ts.Stats(); len(got) != 1 || got["SCANNER"] != want {
		t.Errorf("stats by caller %+v, want only SCANNER with %+v", got, want)
	}
}

// TestStorescuKilled kills storescu in the middle of a series: what the
// spool shows is only whole instances, and sending the series again
// completes it, each instance once.
func TestStorescuKilled(t *testing.T) {
	needDCMTK(t)
	ts := startServer(t, nil)
	insts := series("7", 30, 2<<20)
	_, files := writeFiles(t, insts)

	args := append([]string{"-aet", "SCANNER", "-aec", "GCINGEST", ts.host, ts.port}, files...)
	cmd := exec.Command("storescu", args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first instance stored", 30*time.Second, func() bool {
		dcm, _ := spooled(t, ts.spool)
		return len(dcm) > 0
	})
	cmd.Process.Kill()
	cmd.Wait()
	waitFor(t, "the association to end", 10*time.Second, func() bool { return ts.Stats().Current == 0 })

	dcm, other := spooled(t, ts.spool)
	if len(other) != 0 {
		t.Errorf("spool holds a partial instance after the sender was killed: %v", other)
	}
	if len(dcm) == len(insts) {
		t.Logf("storescu finished before it was killed; the test shows less than it should")
	}
	for uid, paths := range dcm {
		for _, p := range paths {
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dicom.Verify(f); err != nil {
				t.Errorf("instance %s is not whole: %v", uid, err)
			}
			f.Close()
		}
	}
	t.Logf("%d of %d instances stored before the kill", len(dcm), len(insts))

	if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
		t.Fatalf("storescu again: %v\n%s", err, out)
	}
	checkStored(t, ts, "SCANNER", insts, ExplicitVRLittleEndian)
}

// TestEchoToStorescp: Echo, the client side `check --echo` uses, against
// dcmtk's storescp.
func TestEchoToStorescp(t *testing.T) {
	needDCMTK(t)
	if _, err := exec.LookPath("storescp"); err != nil {
		t.Skipf("dcmtk's storescp is not installed: %v", err)
	}
	port := freePort(t)
	cmd := exec.Command("storescp", "-aet", "STORESCP", "-od", t.TempDir(), port)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var conn net.Conn
	waitFor(t, "storescp to listen", 10*time.Second, func() bool {
		var err error
		conn, err = net.Dial("tcp", "127.0.0.1:"+port)
		return err == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := Echo(ctx, conn, "GCINGEST", "STORESCP"); err != nil {
		t.Errorf("Echo to storescp: %v", err)
	}
}
