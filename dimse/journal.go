package dimse

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gcingest/gcingest/durable"
)

// The write-ahead journal of a SpoolStore (see SpoolStore for why).
//
// The file is a ring preceded by two header slots:
//
//	[0, 4096)      head slot 0 ┐ the one with the valid checksum and the
//	[4096, 8192)   head slot 1 ┘ higher counter holds the durable head
//	[8192, …)      the ring: size bytes, written in full at creation
//
// Records are addressed by a logical position that only grows (the ring
// offset is the position modulo size); each starts on a 4096-byte block, so
// that no disk sector holds two records and writing one cannot tear the
// one before. A record is a header block (recordHeader) then its data: the
// Part 10 file exactly as the spool will hold it. A record that would not
// fit before the end of the ring is preceded by a wrap record, which sends
// the reader to the next lap.
//
// The head is the position of the oldest record not yet in the spool;
// records from the head on are replayed at the next start. A record is
// valid only with the journal's id, its own position (a stale record of an
// earlier lap has a smaller one) and both checksums right, so the reader
// stops at the first block that was never committed, and a record torn by
// a crash (its header written, its data not all) is dropped: its sender was
// never told success, since success follows the flush of the whole record.
const (
	jBlock     = 4096
	jDataStart = 2 * jBlock

	// DefaultJournalSize is the size of a SpoolStore's journal. A burst of
	// up to 5/8 of it (the 500 instances of 256 KiB of issue 21's
	// benchmark take 135 MB of records, a little over half) is received at
	// the journal's speed, its files synced once the sender pauses; past
	// that, files are synced while more arrive. It is written in full once,
	// at creation.
	DefaultJournalSize = 256 << 20
	minJournalSize     = 1 << 20
	maxJournalSize     = 16 << 30

	// jMaxPath bounds the spool path a record names (calling AE, study,
	// series, SOP instance: four names of at most 65 characters).
	jMaxPath = 512
	// jBatch bounds the records the background writer moves before one
	// sync of their folders and one write of the head.
	jBatch = 64
	// jMaxQueue bounds the records waiting for the background writer, each
	// holding its file open (to sync it wherever the spool's watch moved
	// it): past it, instances are written directly.
	jMaxQueue = 1024
	// jIdle is how long no record must arrive before the background
	// writer syncs what the journal holds, unless it must now (pressed);
	// jMaxDefer is the longest a record waits for that.
	jIdle     = 20 * time.Millisecond
	jMaxDefer = time.Second
	// jLowBacklog is how many records may wait to be put in place before
	// the background writer does it at its usual priority (see placeAll).
	jLowBacklog = 8

	jKindInstance = 1
	jKindWrap     = 2

	jRecHeaderLen  = 44
	jHeadSlotLen   = 44
	journalSuffix  = ".dimse-journal"
	jRetryMax      = 30 * time.Second
	jSettle        = 10 * time.Second
	jReplayBufSize = 64 << 10
)

var (
	crcTable   = crc32.MakeTable(crc32.Castagnoli)
	jHeadMagic = []byte("GCJHEAD1")
	jRecMagic  = []byte("GCJREC01")
)

// journalHead is a head slot: which journal (id, size) and where its
// oldest record not yet in the spool is.
type journalHead struct {
	id, size, counter, head uint64
}

func (h journalHead) encode() []byte {
	b := make([]byte, 0, jHeadSlotLen)
	b = append(b, jHeadMagic...)
	b = binary.LittleEndian.AppendUint64(b, h.id)
	b = binary.LittleEndian.AppendUint64(b, h.size)
	b = binary.LittleEndian.AppendUint64(b, h.counter)
	b = binary.LittleEndian.AppendUint64(b, h.head)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

func decodeHead(b []byte) (journalHead, bool) {
	if len(b) < jHeadSlotLen || !bytes.Equal(b[:8], jHeadMagic) ||
		crc32.Checksum(b[:40], crcTable) != binary.LittleEndian.Uint32(b[40:44]) {
		return journalHead{}, false
	}
	h := journalHead{
		id:      binary.LittleEndian.Uint64(b[8:]),
		size:    binary.LittleEndian.Uint64(b[16:]),
		counter: binary.LittleEndian.Uint64(b[24:]),
		head:    binary.LittleEndian.Uint64(b[32:]),
	}
	if h.size < minJournalSize || h.size > maxJournalSize || h.size%jBlock != 0 || h.head%jBlock != 0 {
		return journalHead{}, false
	}
	return h, true
}

// recordHeader is the first block of a record:
//
//	0  magic "GCJREC01"     24 data length           36 data CRC-32C
//	8  journal id           32 path length (uint16)  40 CRC-32C of 0:40 and the path
//	16 position             34 kind, 35 zero         44 path
type recordHeader struct {
	id, pos, dataLen uint64
	kind             byte
	dataCRC          uint32
	// path is the instance's place in the spool, relative, four names
	// joined by '/': calling AE, study, series, SOP instance + ".dcm".
	path string
}

func (r recordHeader) encode() []byte {
	b := make([]byte, 0, jRecHeaderLen+len(r.path))
	b = append(b, jRecMagic...)
	b = binary.LittleEndian.AppendUint64(b, r.id)
	b = binary.LittleEndian.AppendUint64(b, r.pos)
	b = binary.LittleEndian.AppendUint64(b, r.dataLen)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(r.path)))
	b = append(b, r.kind, 0)
	b = binary.LittleEndian.AppendUint32(b, r.dataCRC)
	crc := crc32.Update(crc32.Checksum(b, crcTable), crcTable, []byte(r.path))
	b = binary.LittleEndian.AppendUint32(b, crc)
	return append(b, r.path...)
}

// errNoRecord: the block holds no valid record header (never written, of
// another journal, or torn).
var errNoRecord = errors.New("no valid journal record")

// decodeRecordHeader reads the header in block b (jBlock bytes read off the
// disk, so anything), accepting a data length up to maxData: it allocates
// only the path, at most jMaxPath bytes, whatever the lengths say.
func decodeRecordHeader(b []byte, maxData uint64) (recordHeader, error) {
	if len(b) < jRecHeaderLen || !bytes.Equal(b[:8], jRecMagic) {
		return recordHeader{}, errNoRecord
	}
	r := recordHeader{
		id:      binary.LittleEndian.Uint64(b[8:]),
		pos:     binary.LittleEndian.Uint64(b[16:]),
		dataLen: binary.LittleEndian.Uint64(b[24:]),
		kind:    b[34],
		dataCRC: binary.LittleEndian.Uint32(b[36:]),
	}
	n := int(binary.LittleEndian.Uint16(b[32:]))
	if n > jMaxPath || jRecHeaderLen+n > len(b) {
		return recordHeader{}, fmt.Errorf("%w: path of %d bytes", errNoRecord, n)
	}
	path := b[jRecHeaderLen : jRecHeaderLen+n]
	if crc32.Update(crc32.Checksum(b[:40], crcTable), crcTable, path) != binary.LittleEndian.Uint32(b[40:]) {
		return recordHeader{}, fmt.Errorf("%w: header checksum", errNoRecord)
	}
	switch r.kind {
	case jKindWrap:
		if n != 0 || r.dataLen != 0 {
			return recordHeader{}, fmt.Errorf("%w: wrap record with data", errNoRecord)
		}
		return r, nil
	case jKindInstance:
	default:
		return recordHeader{}, fmt.Errorf("%w: kind %d", errNoRecord, r.kind)
	}
	if r.dataLen > maxData {
		return recordHeader{}, fmt.Errorf("%w: %d bytes of data, room for %d", errNoRecord, r.dataLen, maxData)
	}
	r.path = string(path)
	if !validSpoolPath(r.path) {
		return recordHeader{}, fmt.Errorf("%w: path %q", errNoRecord, r.path)
	}
	return r, nil
}

// validSpoolPath reports whether p has the form of what a SpoolStore
// writes records for: four names of pathName's alphabet, none hidden, the
// last ending in .dcm. A replayed record can then never write outside the
// spool, whatever the disk held.
func validSpoolPath(p string) bool {
	parts := strings.Split(p, "/")
	if len(parts) != 4 || !strings.HasSuffix(parts[3], ".dcm") {
		return false
	}
	for _, s := range parts {
		if s == "" || len(s) > 70 || s[0] == '.' {
			return false
		}
		for _, c := range []byte(s) {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// jrec is a committed record whose file is not yet durable in the spool.
type jrec struct {
	pos, n uint64
	path   string
	// placed: the file is in place (renamed) and f, if not nil, is it,
	// open, to be synced; not placed: the background writer writes it.
	placed bool
	f      *os.File
	at     time.Time // committed
	crc    uint32
	// rewrite: syncing the file in place failed, so its bytes on the disk
	// cannot be trusted: it is written again from the record, over itself.
	rewrite bool
	// claim takes the instance's place until its file is in place (nil
	// for a record replayed at start).
	claim *claim
}

// journal is a SpoolStore's write-ahead journal (see the comment above).
type journal struct {
	path string
	f    *os.File // the records and head slots are written through f
	rf   *os.File // the background writer reads through rf, with an offset of its own
	id   uint64
	size uint64

	// w is held by the one Store appending a record; a Store that finds
	// it held writes its instance directly instead.
	w sync.Mutex

	mu      sync.Mutex
	running bool   // the background writer runs: records may be appended
	broken  bool   // a write or flush failed: no more records
	head    uint64 // durable: the oldest record not yet in the spool
	tail    uint64 // where the next record goes
	queue   []jrec
	counter uint64        // of the last head slot written
	kick    chan struct{} // cap 1: a record was appended
	// committed counts the records appended, visible those whose file is
	// in place (renamed into the spool), in the order appended; placed is
	// closed and replaced when visible grows.
	committed, visible uint64
	placed             chan struct{}
	// waiting counts the callers of wait: while one waits, files are put
	// in place at the priority of the caller, not the writer's lower one.
	waiting atomic.Int32
}

func (j *journal) phys(pos uint64) int64 { return jDataStart + int64(pos%j.size) }

// lapEnd is where the lap of the ring that pos is in ends.
func (j *journal) lapEnd(pos uint64) uint64 { return (pos/j.size + 1) * j.size }

func blockAlign(n uint64) uint64 { return (n + jBlock - 1) / jBlock * jBlock }

// errJournalBusy: another SpoolStore, of this process or another, holds
// the journal, and moves its records itself.
var errJournalBusy = errors.New("the journal is in use by another store of the spool")

// journalPath is where the journal of the spool folder dir lives: beside
// it, hidden, so that the spool holds instances only and no watch of the
// parent picks the journal up.
func journalPath(dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("journal of %s: %w", dir, err)
	}
	parent, base := filepath.Split(abs)
	if base == "" || parent == "" {
		return "", fmt.Errorf("journal of %s: the folder has no parent to hold it", dir)
	}
	return filepath.Join(parent, "."+base+journalSuffix), nil
}

// openJournal opens the journal at path, moving the records a previous run
// left into the spool of s first, and creates it (size bytes of ring) if
// there is none or it has another size.
func openJournal(path string, size uint64, s *SpoolStore) (*journal, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open the journal: %w", err)
	}
	if err := lockJournal(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", errJournalBusy, err)
	}
	j := &journal{path: path, f: f, kick: make(chan struct{}, 1), placed: make(chan struct{})}
	ok := false
	defer func() {
		if !ok {
			j.close()
		}
	}()
	if j.rf, err = os.Open(path); err != nil {
		return nil, fmt.Errorf("open the journal: %w", err)
	}
	if h, found := j.readHead(); found {
		j.id, j.size, j.counter, j.head = h.id, h.size, h.counter, h.head
		if err := j.replay(s); err != nil {
			return nil, err
		}
		if j.size == size {
			if err := j.writeHead(j.tail); err != nil {
				return nil, err
			}
			j.head = j.tail
			ok = true
			return j, nil
		}
	}
	if err := j.create(size); err != nil {
		return nil, err
	}
	ok = true
	return j, nil
}

func (j *journal) close() {
	j.f.Close()
	if j.rf != nil {
		j.rf.Close()
	}
}

// readHead returns the head slot that is valid and newest, if any is and
// the file is as long as it says.
func (j *journal) readHead() (journalHead, bool) {
	var best journalHead
	found := false
	b := make([]byte, jHeadSlotLen)
	for slot := range 2 {
		if _, err := j.f.ReadAt(b, int64(slot)*jBlock); err != nil {
			continue
		}
		if h, ok := decodeHead(b); ok && (!found || h.counter > best.counter) {
			best, found = h, true
		}
	}
	if !found {
		return best, false
	}
	fi, err := j.f.Stat()
	if err != nil || fi.Size() != jDataStart+int64(best.size) {
		return best, false
	}
	return best, true
}

// writeHead makes head the durable head, in the slot the last write did
// not use, so that a torn write leaves the other one.
func (j *journal) writeHead(head uint64) error {
	c := j.counter + 1
	b := journalHead{id: j.id, size: j.size, counter: c, head: head}.encode()
	if _, err := j.f.WriteAt(b, int64(c%2)*jBlock); err != nil {
		return fmt.Errorf("write the journal head: %w", err)
	}
	if err := datasync(j.f); err != nil {
		return fmt.Errorf("journal head: %w", err)
	}
	j.counter = c
	return nil
}

// create writes a new, empty journal of size bytes of ring: every block
// written (zeros), not just allocated, so that a record later overwrites
// blocks the file system has already committed and its fdatasync commits
// no metadata.
func (j *journal) create(size uint64) error {
	var idb [8]byte
	rand.Read(idb[:])
	j.id, j.size, j.counter, j.head, j.tail = binary.LittleEndian.Uint64(idb[:]), size, 0, 0, 0
	if err := j.f.Truncate(0); err != nil {
		return fmt.Errorf("create the journal: %w", err)
	}
	zero := make([]byte, 1<<20)
	for off := int64(0); off < jDataStart+int64(size); off += int64(len(zero)) {
		n := min(int64(len(zero)), jDataStart+int64(size)-off)
		if _, err := j.f.WriteAt(zero[:n], off); err != nil {
			return fmt.Errorf("create the journal: %w", err)
		}
	}
	b := journalHead{id: j.id, size: j.size, head: 0}.encode()
	if _, err := j.f.WriteAt(b, 0); err != nil {
		return fmt.Errorf("create the journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("create the journal: %w", err)
	}
	return durable.SyncDir(filepath.Dir(j.path))
}

// replay moves every valid record from the head on into the spool of s
// (as the background writer would; one already there with the same size
// is skipped), and sets the tail after the last.
func (j *journal) replay(s *SpoolStore) error {
	block := make([]byte, jBlock)
	folders := map[string]bool{}
	pos, n := j.head, 0
	for pos-j.head < j.size {
		if _, err := j.f.ReadAt(block, j.phys(pos)); err != nil {
			return fmt.Errorf("replay the journal: %w", err)
		}
		r, err := decodeRecordHeader(block, j.lapEnd(pos)-pos-jBlock)
		if err != nil || r.id != j.id || r.pos != pos {
			break
		}
		if r.kind == jKindWrap {
			pos = j.lapEnd(pos)
			continue
		}
		next := pos + jBlock + blockAlign(r.dataLen)
		off := j.phys(pos) + jBlock
		if crc, err := j.checksum(off, int64(r.dataLen)); err != nil {
			return fmt.Errorf("replay the journal: %w", err)
		} else if crc != r.dataCRC {
			// Torn: the header was written, not all its data. Only the
			// last record can be (the next is written once this one is
			// flushed), and its sender was not told success.
			s.log.Warn("journal: dropped a record whose data is not whole (torn by a crash before its sender was answered)", "file", r.path)
			pos = next
			continue
		}
		folder, err := s.materialize(j.rf, off, int64(r.dataLen), r.path, r.dataCRC, replay, nil)
		if err != nil {
			return fmt.Errorf("replay the journal: %w", err)
		}
		folders[folder] = true
		n++
		pos = next
	}
	for f := range folders {
		if err := durable.SyncDir(f); err != nil {
			return fmt.Errorf("replay the journal: %w", err)
		}
	}
	if n > 0 {
		s.log.Info("journal: moved instances answered before a restart into the spool", "instances", n)
	}
	j.tail = pos
	return nil
}

// checksum returns the CRC-32C of n bytes at off.
func (j *journal) checksum(off, n int64) (uint32, error) {
	h := crc32.New(crcTable)
	buf := make([]byte, jReplayBufSize)
	if _, err := io.CopyBuffer(h, io.NewSectionReader(j.f, off, n), buf); err != nil {
		return 0, err
	}
	return h.Sum32(), nil
}

// reserve returns where the next record goes and how many data bytes fit
// there, or ok false when the journal cannot take one (not running,
// broken, or nearly full: the Store writes directly then). Near the end of
// the ring it writes a wrap record and starts the next lap.
func (j *journal) reserve() (pos uint64, room int64, ok bool) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if !j.running || j.broken || len(j.queue) >= jMaxQueue {
		return 0, 0, false
	}
	free := j.size - (j.tail - j.head)
	if end := j.lapEnd(j.tail); end-j.tail < j.size/8 && free-(end-j.tail) >= j.size/8 {
		// Flushed with the next record; lost in a crash only with it.
		b := recordHeader{id: j.id, pos: j.tail, kind: jKindWrap}.encode()
		if _, err := j.f.WriteAt(b, j.phys(j.tail)); err != nil {
			j.broken = true
			return 0, 0, false
		}
		free -= end - j.tail
		j.tail = end
	}
	room = int64(min(free, j.lapEnd(j.tail)-j.tail)) - jBlock
	if room < jBlock {
		return 0, 0, false
	}
	return j.tail, room, true
}

// commit makes r, written and flushed, the journal's next record, for the
// background writer to finish.
func (j *journal) commit(r jrec) {
	r.at = time.Now()
	j.mu.Lock()
	j.tail = r.pos + jBlock + blockAlign(r.n)
	j.queue = append(j.queue, r)
	j.committed++
	j.mu.Unlock()
	select {
	case j.kick <- struct{}{}:
	default:
	}
}

// pending returns up to max records at the front of the queue.
func (j *journal) pending(max int) []jrec {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]jrec(nil), j.queue[:min(max, len(j.queue))]...)
}

// advance drops the first k records of the queue, now durable in the
// spool, and makes the head durable past them; only then may the writer
// reuse their space.
func (j *journal) advance(k int) error {
	j.mu.Lock()
	j.queue = j.queue[k:]
	head := j.tail
	if len(j.queue) > 0 {
		head = j.queue[0].pos
	}
	j.mu.Unlock()
	if err := j.writeHead(head); err != nil {
		return err
	}
	j.mu.Lock()
	j.head = head
	j.mu.Unlock()
	return nil
}

// pressed reports whether the background writer must sync now rather
// than wait for a pause: the journal is 5/8 full in bytes or half in
// records, or its oldest record waits for jMaxDefer already. That bound
// keeps a file that the spool's watch may have uploaded and deleted (after
// its dicom_settle, a minute by default) from being written again by a
// replay.
func (j *journal) pressed() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.tail-j.head >= j.size/8*5 || len(j.queue) >= jMaxQueue/2 ||
		len(j.queue) > 0 && time.Since(j.queue[0].at) >= jMaxDefer
}

func (j *journal) setRunning(on bool) {
	j.mu.Lock()
	j.running = on
	j.mu.Unlock()
}

// run is the background writer. It puts each committed record's file in
// place as soon as it can (a copy out of the journal, renamed), so that
// the spool shows what was answered within moments; it syncs those files
// and their folders later (moveBatch), once the sender pauses or the
// journal presses, and then frees their space. It runs until stop is
// closed and the queue is empty (or syncing fails then: what is left is
// replayed at the next start).
func (s *SpoolStore) run(j *journal, stop <-chan struct{}) {
	defer j.closeFiles()
	low := startLowPriority()
	defer low.stop()
	stopping := false
	var backoff time.Duration
	fail := func(err error) (quit bool) {
		backoff = min(max(2*backoff, 100*time.Millisecond), jRetryMax)
		s.log.Error("journal: could not move received instances into the spool; they stay in the journal, retrying", "err", err, "retry_in", backoff)
		if stopping {
			return true
		}
		select {
		case <-stop:
			stopping = true
		case <-time.After(backoff):
		}
		return false
	}
	for {
		if s.holdAll.Load() {
			if stopping {
				return
			}
			select {
			case <-stop:
				stopping = true
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		if err := s.placeAll(j, low, 0); err != nil {
			if fail(err) {
				return
			}
			continue
		}
		if !stopping && !j.pressed() {
			// While records keep coming and the journal has room, leave
			// the files to the page cache: their syncs would only compete
			// with the journal's flushes on the sender's path. Sync when
			// the sender pauses, or when the journal presses.
			select {
			case <-stop:
				stopping = true
			case <-j.kick:
				continue
			case <-time.After(jIdle):
			}
		}
		batch := j.pending(jBatch)
		if len(batch) == 0 || s.hold.Load() {
			if stopping {
				return
			}
			select {
			case <-stop:
				stopping = true
			case <-j.kick:
			case <-time.After(100 * time.Millisecond):
				// Polls for the test hook being released.
			}
			continue
		}
		if err := s.moveBatch(j, low, batch); err != nil {
			if fail(err) {
				return
			}
			continue
		}
		backoff = 0
	}
}

// placeAll puts in place, in order, the file of every queued record from
// the from'th on that is not yet: copied out of the journal into a
// temporary file, renamed (unsynced: its sync is moveBatch's), and kept
// open for that sync.
//
// That work (a file created, 256 KiB copied, a rename: more CPU time than
// receiving the instance took) runs on low's thread, of lower priority,
// unless an association waits for it (journal.wait) or more than
// jLowBacklog records wait to be placed: on a machine of few cores it
// would otherwise take the CPU from the associations receiving, and from
// their senders, while the backlog bounds what a release then waits for.
func (s *SpoolStore) placeAll(j *journal, low *lowPriority, from int) error {
	j.mu.Lock()
	var todo []int
	for i := from; i < len(j.queue); i++ {
		if r := j.queue[i]; !r.placed && !r.rewrite {
			todo = append(todo, i)
		}
	}
	recs := make([]jrec, len(todo))
	for k, i := range todo {
		recs[k] = j.queue[i]
	}
	j.mu.Unlock()
	for k, r := range recs {
		var sf *spoolFile
		var dup bool
		var err error
		place := func() { sf, dup, err = s.placeRecord(j, r) }
		if j.waiting.Load() > 0 || len(recs)-k > jLowBacklog {
			place()
		} else {
			low.do(place)
		}
		if err != nil {
			return err
		}
		if !dup {
			sf.closed = true // the file stays open for moveBatch to sync
		}
		sf.discard()
		j.mu.Lock()
		// Only this goroutine removes records (advance), so the index
		// still names r.
		q := &j.queue[todo[k]]
		q.placed = true
		if !dup {
			q.f = sf.f
		}
		j.markVisible()
		j.mu.Unlock()
	}
	return nil
}

// placeRecord copies r's file out of the journal and renames it into
// place (dup: there was one already, and the copy is removed).
//
// The record's claim kept other instances from its place, so there is one
// only if something other than this store put it there (another process's
// store of the same spool, say).
func (s *SpoolStore) placeRecord(j *journal, r jrec) (sf *spoolFile, dup bool, err error) {
	sf, err = s.copyOut(j.rf, j.phys(r.pos)+jBlock, int64(r.n), r.path)
	if err != nil {
		return nil, false, err
	}
	if err := s.makeFolder(sf.rel); err != nil {
		sf.discard()
		return nil, false, fmt.Errorf("move %s from the journal: %w", r.path, err)
	}
	dup, err = s.place(sf.tmp, sf.target, r.path, r.claim)
	if errors.Is(err, ErrConflictingInstance) {
		s.logPlacedOver(sf.target, err)
	} else if err != nil {
		sf.discard()
		return nil, false, fmt.Errorf("move %s from the journal: %w", r.path, err)
	} else if dup {
		s.log.Info("instance received again, kept the first copy", "file", sf.target)
	}
	sf.placed = true // or removed, as a duplicate
	return sf, dup, nil
}

// logPlacedOver logs that the place of a journaled instance, answered
// success, was taken by another with other content when its file was
// to be put there: the one there is kept, and this one is not in the
// spool. Only something other than this store can do that (the instance's
// claim kept the place): an operator must see it.
func (s *SpoolStore) logPlacedOver(target string, err error) {
	s.log.Error("journal: an instance answered success found its place taken by another with other content, which was put there by something other than this store; that one is kept, this one is not in the spool (two stores on one spool?)",
		"file", target, "err", err)
}

// markVisible counts one more record whose file is in place; j.mu held.
func (j *journal) markVisible() {
	j.visible++
	close(j.placed)
	j.placed = make(chan struct{})
}

// wait returns once the file of every record appended before the call is
// in place, or when ctx ends, or at once when the background writer is not
// running.
func (j *journal) wait(ctx context.Context) error {
	j.waiting.Add(1)
	defer j.waiting.Add(-1)
	j.mu.Lock()
	target := j.committed
	for j.visible < target && j.running {
		ch := j.placed
		j.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		j.mu.Lock()
	}
	j.mu.Unlock()
	return nil
}

// moveBatch makes the files of batch durable in the spool, in order: a
// file in place is synced (the writeback of all of them started first),
// one that is not is written as Store without a journal would; then their
// folders are synced once each and the head advances past them.
func (s *SpoolStore) moveBatch(j *journal, low *lowPriority, batch []jrec) error {
	// Every file's writeback first, then the syncs: they then wait on
	// writes under way together and share file system commits.
	for _, r := range batch {
		if r.f != nil {
			startWriteback(r.f)
		}
	}
	folders := map[string]bool{}
	var err error
	k := 0
	for i, r := range batch {
		// What arrived meanwhile is put in place first: an association's
		// release waits for that, not for these syncs. (An error is the
		// run loop's to report, as its next placeAll meets it again.)
		s.placeAll(j, low, len(batch))
		var folder string
		folder, err = s.finishRecord(j, r)
		if r.f != nil {
			j.mu.Lock()
			j.queue[i].f = nil // closed by finishRecord
			if err != nil {
				j.queue[i].placed, j.queue[i].rewrite = false, true
			}
			j.mu.Unlock()
		}
		if err != nil {
			break
		}
		folders[folder] = true
		k++
	}
	for f := range folders {
		if serr := durable.SyncDir(f); serr != nil {
			return serr
		}
	}
	if k > 0 {
		if aerr := j.advance(k); aerr != nil && err == nil {
			err = aerr
		}
	}
	return err
}

// finishRecord makes r's file durable and returns its folder.
func (s *SpoolStore) finishRecord(j *journal, r jrec) (folder string, err error) {
	parts := strings.Split(r.path, "/")
	folder = filepath.Join(s.dir, parts[0], parts[1], parts[2])
	if !r.placed {
		how := fresh
		if r.rewrite {
			how = rewrite
		}
		folder, err := s.materialize(j.rf, j.phys(r.pos)+jBlock, int64(r.n), r.path, r.crc, how, r.claim)
		if err == nil && !r.rewrite {
			j.mu.Lock()
			j.markVisible()
			j.mu.Unlock()
		}
		return folder, err
	}
	f := r.f
	if f == nil {
		// Closed by an earlier stop of the writer: open it again. Gone,
		// it was taken by the spool's watch (this process never lost it).
		if f, err = os.Open(filepath.Join(folder, parts[3])); errors.Is(err, fs.ErrNotExist) {
			return folder, nil
		} else if err != nil {
			return "", fmt.Errorf("sync %s: %w", r.path, err)
		}
	}
	err = f.Sync()
	f.Close()
	if err != nil {
		return "", fmt.Errorf("sync %s: %w", r.path, err)
	}
	return folder, nil
}

// closeFiles closes the files of the records still queued when the
// background writer stops unfinished (held, or failing); a later writer
// opens them again.
func (j *journal) closeFiles() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for i := range j.queue {
		if f := j.queue[i].f; f != nil {
			f.Close()
			j.queue[i].f = nil
		}
	}
}

// spoolFile is an instance copied out of the journal into a temporary
// file, not yet synced or in place.
type spoolFile struct {
	f              *os.File
	tmp            string
	path           string // as in the record
	rel, folder    string
	target         string
	placed, closed bool
}

// discard removes the temporary file unless it was put in place.
func (f *spoolFile) discard() {
	if !f.closed {
		f.f.Close()
	}
	if !f.placed {
		os.Remove(f.tmp)
	}
}

// copyOut copies the n bytes at off of src (the journal) into a new
// temporary file in the spool.
func (s *SpoolStore) copyOut(src *os.File, off, n int64, path string) (_ *spoolFile, err error) {
	parts := strings.Split(path, "/")
	sf := &spoolFile{path: path, rel: filepath.Join(parts[0], parts[1], parts[2])}
	sf.folder = filepath.Join(s.dir, sf.rel)
	sf.target = filepath.Join(sf.folder, parts[3])
	if sf.f, err = os.CreateTemp(s.dir, spoolTempPrefix+"*"+spoolTempSuffix); err != nil {
		return nil, fmt.Errorf("move %s from the journal: %w", path, err)
	}
	sf.tmp = sf.f.Name()
	defer func() {
		if err != nil {
			sf.discard()
		}
	}()
	if _, err := src.Seek(off, io.SeekStart); err != nil {
		return nil, fmt.Errorf("move %s from the journal: %w", path, err)
	}
	// *os.File to *os.File through a LimitedReader: copy_file_range, the
	// bytes never leave the kernel.
	if m, err := sf.f.ReadFrom(&io.LimitedReader{R: src, N: n}); err != nil {
		return nil, fmt.Errorf("move %s from the journal: %w", path, err)
	} else if m != n {
		return nil, fmt.Errorf("move %s from the journal: %d of %d bytes: %w", path, m, n, io.ErrUnexpectedEOF)
	}
	return sf, nil
}

// putInPlace syncs the temporary file and renames it into place, as Store
// without a journal does, unless the instance is there already; the caller
// syncs the folder. own is the record's claim.
func (s *SpoolStore) putInPlace(sf *spoolFile, replace bool, own *claim) error {
	if err := sf.f.Sync(); err != nil {
		return fmt.Errorf("move %s from the journal: sync %s: %w", sf.path, sf.tmp, err)
	}
	sf.closed = true
	if err := sf.f.Close(); err != nil {
		return fmt.Errorf("move %s from the journal: close %s: %w", sf.path, sf.tmp, err)
	}
	if err := s.makeFolder(sf.rel); err != nil {
		return fmt.Errorf("move %s from the journal: %w", sf.path, err)
	}
	var dup bool
	var err error
	if replace {
		err = s.replace(sf.tmp, sf.target)
	} else {
		dup, err = s.place(sf.tmp, sf.target, sf.path, own)
		if errors.Is(err, ErrConflictingInstance) {
			s.logPlacedOver(sf.target, err)
			dup, err = false, nil // logged
		}
	}
	if err != nil {
		return fmt.Errorf("move %s from the journal: %w", sf.path, err)
	}
	sf.placed = true // or removed, as a duplicate
	if dup {
		s.log.Info("instance received again, kept the first copy", "file", sf.target)
	}
	return nil
}

// How materialize treats a file already at the record's place.
const (
	fresh   = iota // keep it: the record is a later copy of the instance
	replay         // keep it if it has the record's bytes, else replace it
	rewrite        // replace it: its sync failed
)

// materialize writes the record of n bytes at off of src (the journal) as
// its spool file, synced and in place; the caller syncs the folder it
// returns. In a replay (crc is the record's checksum) a file already there
// with the same bytes is left alone, and one with others is replaced: it
// was put in place before the crash but its bytes were not synced. (A
// record is only ever written for a place no other instance took, so
// other bytes there are a crash's doing.) own is the record's claim.
func (s *SpoolStore) materialize(src *os.File, off, n int64, path string, crc uint32, how int, own *claim) (folder string, err error) {
	parts := strings.Split(path, "/")
	folder = filepath.Join(s.dir, parts[0], parts[1], parts[2])
	target := filepath.Join(folder, parts[3])
	replace := how == rewrite
	if how == replay {
		if same, err := sameFile(target, n, crc); err != nil {
			return "", err
		} else if same {
			return folder, nil
		}
		_, err := os.Lstat(target)
		replace = err == nil
		if replace {
			s.log.Warn("journal: replaced an instance whose bytes a crash lost", "file", target)
		}
	}
	sf, err := s.copyOut(src, off, n, path)
	if err != nil {
		return "", err
	}
	defer sf.discard()
	if err := s.putInPlace(sf, replace, own); err != nil {
		return "", err
	}
	return folder, nil
}

// sameFile reports whether the file name holds n bytes with checksum crc.
func sameFile(name string, n int64, crc uint32) (bool, error) {
	f, err := os.Open(name)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("compare %s with the journal: %w", name, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || fi.Size() != n {
		return false, nil
	}
	h := crc32.New(crcTable)
	if _, err := io.CopyBuffer(h, f, make([]byte, jReplayBufSize)); err != nil {
		return false, fmt.Errorf("compare %s with the journal: %w", name, err)
	}
	return h.Sum32() == crc, nil
}

// journalWriter writes a record's data into the journal from off on,
// computing its checksum. Past room bytes it moves what it wrote into a
// temporary file in the spool and goes on there (spill): an instance
// larger than the journal's free room is stored as without a journal.
type journalWriter struct {
	s     *SpoolStore
	j     *journal
	off   int64
	n     int64
	room  int64
	crc   uint32
	spill *os.File
	// head holds the record's first bytes (up to its capacity), which
	// hold the data set's header: placeOf reads them from memory.
	head []byte
}

// headerReader returns the record's bytes: the head from memory, the rest
// from the journal.
func (w *journalWriter) headerReader() io.Reader {
	h := bytes.NewReader(w.head)
	if int64(len(w.head)) >= w.n {
		return h
	}
	return io.MultiReader(h, io.NewSectionReader(w.j.f, w.off+int64(len(w.head)), w.n-int64(len(w.head))))
}

func (w *journalWriter) Write(p []byte) (int, error) {
	if w.spill == nil && w.n+int64(len(p)) > w.room {
		f, err := os.CreateTemp(w.s.dir, spoolTempPrefix+"*"+spoolTempSuffix)
		if err != nil {
			return 0, fmt.Errorf("create a temporary file: %w", err)
		}
		if _, err := io.Copy(f, io.NewSectionReader(w.j.f, w.off, w.n)); err != nil {
			f.Close()
			os.Remove(f.Name())
			return 0, fmt.Errorf("copy from the journal into %s: %w", f.Name(), err)
		}
		w.spill = f
	}
	if w.spill != nil {
		n, err := w.spill.Write(p)
		w.n += int64(n)
		return n, err
	}
	n, err := w.j.f.WriteAt(p, w.off+w.n)
	w.crc = crc32.Update(w.crc, crcTable, p[:n])
	if k := min(n, cap(w.head)-len(w.head)); k > 0 {
		w.head = append(w.head, p[:k]...)
	}
	w.n += int64(n)
	if err != nil {
		return n, fmt.Errorf("write the journal: %w", err)
	}
	return n, nil
}

// storeJournal is Store through the journal: the instance is written into
// a journal record as it arrives, the record flushed (one fdatasync: the
// instance is durable), and success answered; the background writer puts
// the file in place within moments, and syncs it later. handled is false
// when the journal could not take the record before anything was read;
// Store then writes directly.
func (s *SpoolStore) storeJournal(ctx context.Context, j *journal, in Instance, dataset io.Reader) (handled bool, err error) {
	pos, room, ok := j.reserve()
	if !ok {
		return false, nil
	}
	w := &journalWriter{s: s, j: j, off: j.phys(pos) + jBlock, room: room, head: s.headBuf()}
	defer s.putHeadBuf(w.head)
	defer func() {
		if err != nil && w.spill != nil {
			w.spill.Close()
			os.Remove(w.spill.Name())
		}
	}()
	bw := s.writer(w)
	defer s.putWriter(bw)
	if _, err := WriteFileMeta(bw, in); err != nil {
		return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	n, err := io.Copy(bw, dataset)
	if err != nil {
		return true, fmt.Errorf("store %s after %d bytes: %w", in.SOPInstanceUID, n, err)
	}
	if err := bw.Flush(); err != nil {
		return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	if w.spill != nil {
		s.log.Debug("instance larger than the journal's free room, written directly", "sop_instance_uid", in.SOPInstanceUID, "bytes", w.n)
		f := w.spill
		w.spill = nil // finish owns it now
		return true, s.finish(ctx, in, f, n)
	}
	if err := ctx.Err(); err != nil {
		return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	rel, name, err := s.placeOf(in, w.headerReader())
	if err != nil {
		return true, err
	}
	// The folder is made (and synced) now, once per series, as without a
	// journal: a folder that cannot be made is answered "out of
	// resources".
	if err := s.makeFolder(rel); err != nil {
		return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	target := filepath.Join(s.dir, rel, name)
	path := filepath.ToSlash(filepath.Join(rel, name))
	// Is the place taken (a file, or a record not yet in place)? If not,
	// this record claims it before it is flushed, so that no instance
	// arriving meanwhile takes it.
	c := &claim{path: path, f: j.f, off: w.off, n: w.n, done: make(chan struct{})}
	first := s.lockPlace(path, nil)
	r, size, fdone, found, err := firstCopy(first, target)
	same := false
	if err == nil && found {
		if size == w.n {
			same, err = equalContent(r, w.headerReader())
		}
		fdone()
	}
	if err == nil && !found {
		s.claims[path] = c
	}
	s.mu.Unlock()
	if err != nil {
		return true, fmt.Errorf("store %s: compare with %s: %w", in.SOPInstanceUID, target, err)
	}
	if found && !same {
		err := fmt.Errorf("store %s: %w", in.SOPInstanceUID, conflictError(target, first))
		s.logConflict(in, target, err)
		return true, err
	}
	if found {
		// Stored already: keep the first copy, and journal nothing. A
		// file's folder is synced, as without a journal, in case the
		// first copy was renamed by a direct store that has not synced
		// it yet (one renamed by the background writer is in the journal
		// until it is, as a copy still only in the journal is).
		if first == nil {
			if err := durable.SyncDir(filepath.Join(s.dir, rel)); err != nil {
				return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
			}
		}
		s.log.Info("instance received again, kept the first copy", "calling_ae", in.CallingAE, "sop_instance_uid", in.SOPInstanceUID, "file", target)
		return true, nil
	}
	hdr := recordHeader{id: j.id, pos: pos, dataLen: uint64(w.n), kind: jKindInstance, dataCRC: w.crc, path: path}.encode()
	if _, err := j.f.WriteAt(hdr, j.phys(pos)); err != nil {
		s.dropClaim(c)
		j.setBroken()
		return true, fmt.Errorf("store %s: write the journal: %w", in.SOPInstanceUID, err)
	}
	if err := datasync(j.f); err != nil {
		// After a failed flush the kernel may have dropped the dirty
		// pages: nothing in the journal can be trusted to be on disk.
		s.dropClaim(c)
		j.setBroken()
		s.log.Error("journal: a flush failed; instances are written directly from now on", "err", err)
		return true, fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	j.commit(jrec{pos: pos, n: uint64(w.n), path: path, crc: w.crc, claim: c})
	close(c.done)
	s.log.Debug("instance journaled", "calling_ae", in.CallingAE, "sop_instance_uid", in.SOPInstanceUID, "file", path, "bytes", n)
	return true, nil
}

func (j *journal) setBroken() {
	j.mu.Lock()
	j.broken = true
	j.mu.Unlock()
}

// journaled is what Serve and an association ask of a Store that keeps a
// journal: start its background writer while serving (done stops and joins
// it), and wait until what was answered is in the spool.
type journaled interface {
	serving() (done func())
	settle(ctx context.Context)
}

var _ journaled = (*SpoolStore)(nil)

// serving starts the background writer if it is not running, for as long
// as some Serve uses the store; the last done stops it, after it has moved
// what the journal holds, and joins it.
func (s *SpoolStore) serving() (done func()) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	j := s.journal
	if j == nil {
		return func() {}
	}
	s.users++
	if s.users == 1 {
		stop, stopped := make(chan struct{}), make(chan struct{})
		s.stop, s.stopped = stop, stopped
		j.setRunning(true)
		go func() {
			defer close(stopped)
			s.run(j, stop)
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			s.jmu.Lock()
			defer s.jmu.Unlock()
			s.users--
			if s.users == 0 {
				j.setRunning(false) // no record is appended after this
				close(s.stop)
				<-s.stopped
			}
		})
	}
}

// settle waits, at most jSettle, until the file of every instance the
// store answered success for is in the spool, not only in the journal: an
// association's end (its release before it is answered) waits for it, so
// that a sender that is done finds its instances in the spool.
func (s *SpoolStore) settle(parent context.Context) {
	if s.journal == nil {
		return
	}
	ctx, cancel := context.WithTimeout(parent, jSettle)
	defer cancel()
	if s.holdAll.Load() {
		return
	}
	if err := s.journal.wait(ctx); err != nil && parent.Err() == nil {
		s.log.Warn("journal: instances answered are not in the spool yet; they are durable in the journal", "err", err)
	}
}

// logger returns l, or one that discards.
func logger(l *slog.Logger) *slog.Logger {
	if l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return l
}
