package dimse

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

const ctImageStorage = "1.2.840.10008.5.1.4.1.1.2"

// testInstance describes a small but valid CT instance for the tests.
type testInstance struct {
	study, series, sop string
	sopClass           string // "": CT Image Storage
	number             int
	pixels             int // bytes of 8-bit pixel data: rows × 16 columns
	private            int // bytes of a private element before the study UID
}

// dataSet encodes the instance as an explicit VR little endian data set:
// the attributes a CT image and the grouper need, then pixel data.
func (ti testInstance) dataSet() []byte {
	var b []byte
	str := func(g, e uint16, vr, v string) {
		pad := byte(' ')
		if vr == "UI" {
			pad = 0
		}
		val := []byte(v)
		if len(val)%2 == 1 {
			val = append(val, pad)
		}
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(val)))
		b = append(b, val...)
	}
	us := func(g, e uint16, v uint16) {
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, "US"...)
		b = binary.LittleEndian.AppendUint16(b, 2)
		b = binary.LittleEndian.AppendUint16(b, v)
	}
	pixels := ti.pixels
	if pixels == 0 {
		pixels = 256
	}
	rows := pixels / 16
	sopClass := ti.sopClass
	if sopClass == "" {
		sopClass = ctImageStorage
	}
	str(0x0008, 0x0016, "UI", sopClass)
	str(0x0008, 0x0018, "UI", ti.sop)
	str(0x0008, 0x0060, "CS", "CT")
	if ti.private > 0 {
		str(0x0009, 0x0010, "LO", "GCINGEST TEST")
		b = binary.LittleEndian.AppendUint16(b, 0x0009)
		b = binary.LittleEndian.AppendUint16(b, 0x1001)
		b = append(b, "OB"...)
		b = append(b, 0, 0)
		n := (ti.private + 1) &^ 1
		b = binary.LittleEndian.AppendUint32(b, uint32(n))
		b = append(b, make([]byte, n)...)
	}
	str(0x0010, 0x0010, "PN", "TEST^PATIENT")
	str(0x0010, 0x0020, "LO", "ID0001")
	str(0x0020, 0x000D, "UI", ti.study)
	str(0x0020, 0x000E, "UI", ti.series)
	str(0x0020, 0x0013, "IS", fmt.Sprint(ti.number))
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
		b = append(b, byte(i*7+ti.number))
	}
	return b
}

// file encodes the instance as a Part 10 file in explicit VR little endian.
func (ti testInstance) file(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := WriteFileMeta(&buf, Instance{SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, TransferSyntaxUID: ExplicitVRLittleEndian}); err != nil {
		t.Fatal(err)
	}
	buf.Write(ti.dataSet())
	return buf.Bytes()
}

// series makes n instances of one new series, numbered from 1.
func series(tag string, n, pixels int) []testInstance {
	out := make([]testInstance, n)
	for i := range out {
		out[i] = testInstance{
			study:  "1.2.826.0.1.3680043.2.1125.9." + tag + ".1",
			series: "1.2.826.0.1.3680043.2.1125.9." + tag + ".2",
			sop:    fmt.Sprintf("1.2.826.0.1.3680043.2.1125.9.%s.3.%d", tag, i+1),
			number: i + 1,
			pixels: pixels,
		}
	}
	return out
}

// writeFiles writes the instances as files into a new folder.
func writeFiles(t testing.TB, insts []testInstance) (dir string, paths []string) {
	t.Helper()
	dir = t.TempDir()
	for i, ti := range insts {
		p := filepath.Join(dir, fmt.Sprintf("IM%04d.dcm", i+1))
		if err := os.WriteFile(p, ti.file(t), 0o600); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	return dir, paths
}

// testServer is a Server with a SpoolStore in a temporary folder, serving
// on 127.0.0.1 until the test ends.
type testServer struct {
	*Server
	addr  string
	host  string
	port  string
	spool string
	stop  func() // cancels Serve and waits for it; the cleanup calls it too
}

// testLogger logs into the test's output.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testJournalSize is the journal size of startServer's stores: small, as
// writing DefaultJournalSize at each test's start would make the tests slow;
// the benchmark sets 0, the default.
var testJournalSize int64 = 4 << 20

func startServer(t *testing.T, configure func(*Config)) *testServer {
	t.Helper()
	return startServerOn(t, configure, nil)
}

// startServerOn is startServer with the listener wrapped by wrap (a TLS
// listener, say) when wrap is not nil.
func startServerOn(t *testing.T, configure func(*Config), wrap func(net.Listener) net.Listener) *testServer {
	t.Helper()
	spool := t.TempDir()
	cfg := Config{
		AETitle:      "GCINGEST",
		Allow:        []Caller{{AETitle: "SCANNER"}},
		Logger:       testLogger(t),
		ARTIMTimeout: 5 * time.Second,
		IdleTimeout:  20 * time.Second,
	}
	if configure != nil {
		configure(&cfg)
	}
	if cfg.Store == nil {
		// The store logs where the server does: a configure that silences
		// the server (Logger nil) silences both.
		jp, err := journalPath(spool)
		if err != nil {
			t.Fatal(err)
		}
		store, err := NewSpoolStore(spool, cfg.Logger, WithJournal(jp, testJournalSize))
		if err != nil {
			t.Fatal(err)
		}
		cfg.Store = store
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	if wrap != nil {
		ln = wrap(ln)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	ts := &testServer{Server: srv, addr: net.JoinHostPort(host, port), host: host, port: port, spool: spool}
	var once sync.Once
	ts.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Serve: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Errorf("Serve did not return within 5 s of its ctx being cancelled")
			}
			noDimseGoroutines(t)
		})
	}
	t.Cleanup(ts.stop)
	return ts
}

// noDimseGoroutines fails the test if a goroutine of this package's server
// is still running.
func noDimseGoroutines(t *testing.T) {
	t.Helper()
	var stacks string
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks = string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "dimse.(*Server)") && !strings.Contains(stacks, "dimse.(*assoc)") {
			return
		}
	}
	t.Errorf("goroutines of the server still run after Serve returned:\n%s", stacks)
}

// spooled lists the spool: the .dcm files by SOP instance UID (the file
// name), and every other file.
func spooled(t *testing.T, spool string) (dcm map[string][]string, other []string) {
	t.Helper()
	dcm = map[string][]string{}
	err := filepath.WalkDir(spool, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if name := d.Name(); strings.HasSuffix(name, ".dcm") && !strings.HasPrefix(name, ".") {
			uid := strings.TrimSuffix(name, ".dcm")
			dcm[uid] = append(dcm[uid], p)
		} else {
			other = append(other, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return dcm, other
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s", d, what)
		}
	}
}
