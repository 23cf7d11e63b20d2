package dimse

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

func needJournal(t *testing.T) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("the journal is kept on Linux only")
	}
}

// stored is the file a SpoolStore writes for ti sent by SCANNER: what the
// spool must hold, byte for byte.
func stored(t testing.TB, ti testInstance) []byte {
	t.Helper()
	var buf bytes.Buffer
	in := Instance{CallingAE: "SCANNER", SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, TransferSyntaxUID: ExplicitVRLittleEndian}
	if _, err := WriteFileMeta(&buf, in); err != nil {
		t.Fatal(err)
	}
	buf.Write(ti.dataSet())
	return buf.Bytes()
}

func spoolPath(spool string, ti testInstance) string {
	return filepath.Join(spool, "SCANNER", ti.study, ti.series, ti.sop+".dcm")
}

// checkIdentical asserts that each instance is in the spool exactly once
// and byte for byte what was sent, and that the spool holds nothing else.
func checkIdentical(t *testing.T, spool string, insts []testInstance) {
	t.Helper()
	dcm, other := spooled(t, spool)
	if len(other) != 0 {
		t.Errorf("spool holds files that are not instances: %v", other)
	}
	if len(dcm) != len(insts) {
		t.Errorf("spool holds %d instances, want %d", len(dcm), len(insts))
	}
	for _, ti := range insts {
		want := spoolPath(spool, ti)
		if got := dcm[ti.sop]; len(got) != 1 || got[0] != want {
			t.Errorf("instance %s stored as %v, want once as %s", ti.sop, got, want)
			continue
		}
		b, err := os.ReadFile(want)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(b, stored(t, ti)) {
			t.Errorf("instance %s: %d bytes in the spool differ from the %d sent", ti.sop, len(b), len(stored(t, ti)))
		}
	}
}

// TestServerKilledJournalHeld: storescu's whole series is answered success
// while the background writer is held, so no instance's file nor folder
// is synced: each is durable in the journal only. The server is killed
// (SIGKILL), and what a power loss could then do to those files is done:
// one is gone, one cut short, one zeroed. The next start puts every one
// back, once and byte for byte, before it accepts an association, and
// leaves nothing else in the spool.
func TestServerKilledJournalHeld(t *testing.T) {
	needDCMTK(t)
	needJournal(t)
	spool := t.TempDir()
	port := freePort(t)
	addr := "127.0.0.1:" + port
	ts := &testServer{host: "127.0.0.1", port: port, addr: addr, spool: spool}

	server := startHelper(t, spool, addr, "DIMSE_HELPER_HOLD=sync")
	insts := series("81", 40, 64<<10)
	_, files := writeFiles(t, insts)
	if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	// storescu exits 0 only if every C-STORE was answered success, and
	// what was answered is in the spool at once.
	checkIdentical(t, spool, insts)
	server.Process.Kill()
	server.Wait()

	if err := os.Remove(spoolPath(spool, insts[3])); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(spoolPath(spool, insts[17]), 1000); err != nil {
		t.Fatal(err)
	}
	size := len(stored(t, insts[29]))
	if err := os.WriteFile(spoolPath(spool, insts[29]), make([]byte, size), 0o600); err != nil {
		t.Fatal(err)
	}

	startHelper(t, spool, addr)
	checkIdentical(t, spool, insts)
	// Sent again: each stays once.
	if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
		t.Fatalf("storescu again: %v\n%s", err, out)
	}
	checkIdentical(t, spool, insts)
}

// TestServerKilledJournalUnplaced: storescu's whole series is answered
// success while the background writer does nothing at all, so no file is
// in the spool, every instance in the journal only; the server is killed
// (SIGKILL). The next start puts every one in place, once and byte for
// byte, before it accepts an association.
func TestServerKilledJournalUnplaced(t *testing.T) {
	needDCMTK(t)
	needJournal(t)
	spool := t.TempDir()
	port := freePort(t)
	addr := "127.0.0.1:" + port
	ts := &testServer{host: "127.0.0.1", port: port, addr: addr, spool: spool}

	server := startHelper(t, spool, addr, "DIMSE_HELPER_HOLD=all")
	insts := series("85", 40, 64<<10)
	_, files := writeFiles(t, insts)
	if out, err := ts.storescu(t, "SCANNER", nil, files...); err != nil {
		t.Fatalf("storescu: %v\n%s", err, out)
	}
	if dcm, _ := spooled(t, spool); len(dcm) != 0 {
		t.Fatalf("%d instances in the spool with the background writer held; the test shows less than it should", len(dcm))
	}
	server.Process.Kill()
	server.Wait()

	startHelper(t, spool, addr)
	checkIdentical(t, spool, insts)
}

// journalStore is a SpoolStore with a small journal of its own in a
// temporary folder, its background writer running (serving).
func journalStore(t *testing.T, spool, jpath string, size int64) (*SpoolStore, func()) {
	t.Helper()
	s, err := NewSpoolStore(spool, testLogger(t), WithJournal(jpath, size))
	if err != nil {
		t.Fatal(err)
	}
	if s.journal == nil {
		t.Fatal("no journal")
	}
	return s, s.serving()
}

func storeAll(t *testing.T, s *SpoolStore, insts []testInstance) {
	t.Helper()
	for _, ti := range insts {
		in := Instance{CallingAE: "SCANNER", SOPClassUID: ctImageStorage, SOPInstanceUID: ti.sop, TransferSyntaxUID: ExplicitVRLittleEndian}
		if err := s.Store(context.Background(), in, bytes.NewReader(ti.dataSet())); err != nil {
			t.Fatalf("store %s: %v", ti.sop, err)
		}
	}
}

// TestJournalTornTail: of the records a power loss left in the journal,
// the whole ones are written into the spool at the next start and the last
// one, torn (its header written, not all its data), is dropped; it was
// never answered. The space is reused after.
func TestJournalTornTail(t *testing.T) {
	needJournal(t)
	spool, jpath := t.TempDir(), filepath.Join(t.TempDir(), "journal")
	s, done := journalStore(t, spool, jpath, 1<<20)
	s.hold.Store(true)
	insts := series("82", 3, 20<<10)
	storeAll(t, s, insts)
	done() // held: syncs nothing, as if killed
	// A power loss takes the files, which were never synced; the last
	// record is torn as if the loss came while it was written, before
	// its answer.
	if err := os.RemoveAll(filepath.Join(spool, "SCANNER")); err != nil {
		t.Fatal(err)
	}
	j := s.journal
	j.mu.Lock()
	last := j.queue[len(j.queue)-1]
	j.mu.Unlock()
	s.Close()

	f, err := os.OpenFile(jpath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, jBlock), j.phys(last.pos)+jBlock+int64(last.n)/2); err != nil {
		t.Fatal(err)
	}
	f.Close()

	s2, done2 := journalStore(t, spool, jpath, 1<<20)
	done2()
	s2.Close()
	checkIdentical(t, spool, insts[:2])

	// The torn record's space is reused, and nothing is moved twice.
	s3, done3 := journalStore(t, spool, jpath, 1<<20)
	storeAll(t, s3, insts[2:])
	done3()
	s3.Close()
	checkIdentical(t, spool, insts)
}

// TestJournalWrapAndSpill: a journal much smaller than the series wraps
// around many times while the background writer empties it, and an
// instance larger than the journal is written directly; each lands once,
// byte for byte, and a restart replays nothing that was moved.
func TestJournalWrapAndSpill(t *testing.T) {
	needJournal(t)
	spool, jpath := t.TempDir(), filepath.Join(t.TempDir(), "journal")
	s, done := journalStore(t, spool, jpath, 1<<20)
	insts := series("83", 40, 100<<10)
	big := series("84", 1, 3<<20)
	storeAll(t, s, insts[:20])
	storeAll(t, s, big)
	storeAll(t, s, insts[20:])
	done()
	s.journal.mu.Lock()
	laps := s.journal.tail / s.journal.size
	s.journal.mu.Unlock()
	if laps < 2 {
		t.Errorf("the journal went round %d times, want at least 2", laps)
	}
	s.Close()
	all := append(append([]testInstance(nil), insts...), big...)
	checkIdentical(t, spool, all)

	// Deleted as after_upload = "delete" does: a restart must not bring
	// them back from the journal.
	if err := os.RemoveAll(filepath.Join(spool, "SCANNER")); err != nil {
		t.Fatal(err)
	}
	s2, done2 := journalStore(t, spool, jpath, 1<<20)
	done2()
	s2.Close()
	if dcm, _ := spooled(t, spool); len(dcm) != 0 {
		t.Errorf("a restart brought back %d instances already moved", len(dcm))
	}
}

// TestJournalLongHeader: the study and series UIDs, which place an
// instance, come after more than the first bytes of a record that the
// journal keeps in memory (jHeadCap): they are read from the journal.
func TestJournalLongHeader(t *testing.T) {
	needJournal(t)
	spool, jpath := t.TempDir(), filepath.Join(t.TempDir(), "journal")
	s, done := journalStore(t, spool, jpath, 1<<20)
	insts := series("85", 3, 4<<10)
	for i := range insts {
		insts[i].private = []int{jHeadCap - 600, jHeadCap + 1000, 3 * jHeadCap}[i]
	}
	storeAll(t, s, insts)
	done()
	s.journal.mu.Lock()
	n := s.journal.tail
	s.journal.mu.Unlock()
	if n == 0 {
		t.Error("nothing went through the journal")
	}
	s.Close()
	checkIdentical(t, spool, insts)
}

// TestJournalBusy: a second store of the same spool while the first holds
// the journal writes directly rather than into the first's journal.
func TestJournalBusy(t *testing.T) {
	needJournal(t)
	spool := t.TempDir()
	jp, err := journalPath(spool)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewSpoolStore(spool, testLogger(t), WithJournal(jp, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := NewSpoolStore(spool, testLogger(t), WithJournal(jp, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if a.journal == nil || b.journal != nil {
		t.Errorf("journals %v and %v, want the first store's only", a.journal != nil, b.journal != nil)
	}
	if _, err := os.Stat(jp); err != nil || filepath.Dir(jp) == spool {
		t.Errorf("journal %s: %v; want it beside the spool", jp, err)
	}
}

func TestDecodeRecordHeader(t *testing.T) {
	valid := recordHeader{id: 7, pos: 8192, dataLen: 1000, kind: jKindInstance, dataCRC: 42, path: "SCANNER/1.2/1.3/1.4.dcm"}
	block := func(r recordHeader, edit func(b []byte)) []byte {
		b := make([]byte, jBlock)
		copy(b, r.encode())
		if edit != nil {
			edit(b)
		}
		return b
	}
	// Re-seals the header checksum after an edit, so that the check after
	// it is the one tested.
	reseal := func(b []byte) {
		n := int(binary.LittleEndian.Uint16(b[32:]))
		n = min(n, len(b)-jRecHeaderLen)
		crc := crc32Update(b[:40], b[jRecHeaderLen:jRecHeaderLen+n])
		binary.LittleEndian.PutUint32(b[40:], crc)
	}
	for _, tc := range []struct {
		name string
		b    []byte
		ok   bool
	}{
		{"valid", block(valid, nil), true},
		{"wrap", block(recordHeader{id: 7, pos: 4096, kind: jKindWrap}, nil), true},
		{"zeros", make([]byte, jBlock), false},
		{"short", block(valid, nil)[:20], false},
		{"magic", block(valid, func(b []byte) { b[0] = 'X' }), false},
		{"header checksum", block(valid, func(b []byte) { b[20]++ }), false},
		{"path checksum", block(valid, func(b []byte) { b[jRecHeaderLen]++ }), false},
		{"path length past the block", block(valid, func(b []byte) { binary.LittleEndian.PutUint16(b[32:], 0xffff); reseal(b) }), false},
		{"path length past the maximum", block(valid, func(b []byte) { binary.LittleEndian.PutUint16(b[32:], jMaxPath+1); reseal(b) }), false},
		{"data longer than the room", block(valid, func(b []byte) { binary.LittleEndian.PutUint64(b[24:], 1<<62); reseal(b) }), false},
		{"unknown kind", block(valid, func(b []byte) { b[34] = 9; reseal(b) }), false},
		{"wrap with data", block(recordHeader{id: 7, pos: 4096, kind: jKindWrap, dataLen: 5}, nil), false},
		{"path escapes", block(recordHeader{id: 7, kind: jKindInstance, path: "../../../etc/x.dcm"}, nil), false},
		{"path hidden", block(recordHeader{id: 7, kind: jKindInstance, path: "A/.b/c/d.dcm"}, nil), false},
		{"path of three names", block(recordHeader{id: 7, kind: jKindInstance, path: "A/b/c.dcm"}, nil), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := decodeRecordHeader(tc.b, 1<<20)
			if (err == nil) != tc.ok {
				t.Fatalf("decode: %v, want ok %v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errNoRecord) {
				t.Errorf("error %v does not wrap errNoRecord", err)
			}
			if tc.name == "valid" && (r.id != valid.id || r.pos != valid.pos || r.dataLen != valid.dataLen || r.dataCRC != valid.dataCRC || r.path != valid.path) {
				t.Errorf("decoded %+v, want %+v", r, valid)
			}
		})
	}
}

func crc32Update(head, path []byte) uint32 {
	return crc32.Update(crc32.Checksum(head, crcTable), crcTable, path)
}

// FuzzDecodeRecordHeader: whatever a journal block holds, the decoder
// neither panics nor accepts a record that could write outside the spool
// or claims more data than the room it was given.
func FuzzDecodeRecordHeader(f *testing.F) {
	f.Add(recordHeader{id: 1, pos: 0, dataLen: 10, kind: jKindInstance, path: "A/1.2/1.3/1.4.dcm"}.encode(), uint64(1<<20))
	f.Add(recordHeader{id: 1, pos: 4096, kind: jKindWrap}.encode(), uint64(0))
	f.Add(make([]byte, jRecHeaderLen), uint64(1))
	f.Fuzz(func(t *testing.T, b []byte, room uint64) {
		r, err := decodeRecordHeader(b, room)
		if err != nil {
			return
		}
		if r.kind == jKindInstance && (r.dataLen > room || !validSpoolPath(r.path) || strings.Contains(r.path, "..")) {
			t.Errorf("accepted %+v with room %d", r, room)
		}
	})
}

// TestJournalReplayGarbage: a journal whose ring holds anything at all
// (here: records whose lengths and paths are garbage, pointing anywhere)
// opens without a panic and moves nothing it cannot verify.
func TestJournalReplayGarbage(t *testing.T) {
	needJournal(t)
	spool, jpath := t.TempDir(), filepath.Join(t.TempDir(), "journal")
	s, done := journalStore(t, spool, jpath, 1<<20)
	done()
	id := s.journal.id
	s.Close()
	f, err := os.OpenFile(jpath, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	// A record at the head whose data length runs past the ring, then
	// one with a valid header but data that does not match its checksum.
	bad := recordHeader{id: id, pos: 0, dataLen: 1 << 40, kind: jKindInstance, path: "A/b/c/d.dcm"}.encode()
	f.WriteAt(bad, jDataStart)
	f.Close()
	s2, done2 := journalStore(t, spool, jpath, 1<<20)
	done2()
	s2.Close()
	if dcm, other := spooled(t, spool); len(dcm)+len(other) != 0 {
		t.Errorf("the spool holds %v %v after a replay of garbage", dcm, other)
	}
}
