package dimse

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gcingest/gcingest/dicom"
)

// TestMain lets the test binary also be the server process that
// TestServerKilled kills: with DIMSE_HELPER_SPOOL set it serves on
// DIMSE_HELPER_ADDR until killed.
func TestMain(m *testing.M) {
	if spool := os.Getenv("DIMSE_HELPER_SPOOL"); spool != "" {
		if err := helperServer(spool, os.Getenv("DIMSE_HELPER_ADDR")); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func helperServer(spool, addr string) error {
	jp, err := journalPath(spool)
	if err != nil {
		return err
	}
	store, err := NewSpoolStore(spool, nil, WithJournal(jp, testJournalSize))
	if err != nil {
		return err
	}
	// The journal's background writer syncs nothing (sync), or does nothing
	// at all (all): every instance answered is durable in the journal only
	// (TestServerKilledJournalHeld).
	store.hold.Store(os.Getenv("DIMSE_HELPER_HOLD") != "")
	store.holdAll.Store(os.Getenv("DIMSE_HELPER_HOLD") == "all")
	srv, err := NewServer(Config{AETitle: "GCINGEST", Allow: []Caller{{AETitle: "SCANNER"}}, Store: store})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return srv.Serve(context.Background(), ln)
}

// startHelper starts the server in a process of its own and waits until
// it listens.
func startHelper(t *testing.T, spool, addr string, env ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "DIMSE_HELPER_SPOOL="+spool, "DIMSE_HELPER_ADDR="+addr)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	waitFor(t, "the server process to listen", 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return cmd
}

// TestServerKilled kills the receiving process (SIGKILL) in the middle of
// a series: the spool shows only whole instances and hidden temporary
// files, the next start removes the temporary files, and the sender's
// resend completes the series, each instance once.
func TestServerKilled(t *testing.T) {
	needDCMTK(t)
	spool := t.TempDir()
	port := freePort(t)
	addr := "127.0.0.1:" + port
	ts := &testServer{host: "127.0.0.1", port: port, addr: addr, spool: spool}

	server := startHelper(t, spool, addr)
	insts := series("80", 30, 2<<20)
	_, files := writeFiles(t, insts)
	sender := exec.Command("storescu", append([]string{"-aet", "SCANNER", "-aec", "GCINGEST", "127.0.0.1", port}, files...)...)
	if err := sender.Start(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the first instance stored", 30*time.Second, func() bool {
		dcm, _ := spooled(t, spool)
		return len(dcm) > 0
	})
	server.Process.Kill()
	server.Wait()
	if err := sender.Wait(); err == nil {
		t.Log("storescu finished before the server was killed; the test shows less than it should")
	}

	dcm, other := spooled(t, spool)
	for _, p := range other {
		if name := filepath.Base(p); filepath.Dir(p) != spool || !strings.HasPrefix(name, spoolTempPrefix) || !strings.HasSuffix(name, spoolTempSuffix) {
			t.Errorf("after the kill the spool shows %s, neither a whole instance nor a hidden temporary file", p)
		}
	}
	for uid, paths := range dcm {
		f, err := os.Open(paths[0])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dicom.Verify(f); err != nil {
			t.Errorf("instance %s is not whole after the kill: %v", uid, err)
		}
		f.Close()
	}
	t.Logf("%d of %d instances and %d temporary files in the spool after the kill", len(dcm), len(insts), len(other))

	startHelper(t, spool, addr)
	if _, other := spooled(t, spool); len(other) != 0 {
		t.Errorf("temporary files left after the restart: %v", other)
	}
	if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
		t.Fatalf("storescu again: %v\n%s", err, out)
	}
	checkStored(t, ts, "SCANNER", insts, ExplicitVRLittleEndian)
}
