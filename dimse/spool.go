package dimse

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/gcingest/gcingest/dicom"
	"github.com/gcingest/gcingest/durable"
)

// Temporary files are hidden and end in .tmp: the watcher and grouper
// never pick up either (DESIGN.md, "Temporary and hidden files").
const (
	spoolTempPrefix = ".dimse-"
	spoolTempSuffix = ".tmp"
)

// SpoolStore is the Store that feeds a watch folder: each instance becomes
// a DICOM Part 10 file
//
//	<dir>/<calling AE>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
//
// written durably: into a hidden temporary file in dir, synced, renamed
// into place, and the folder synced (docs/PATTERNS.md, rule 5), so that a
// reader, and the next run after a crash, sees the whole file or none.
//
// The temporary file lives in dir rather than beside its target because the
// target is only known once the data set has been read (its study and
// series UIDs come from the data set, not the command); dir is on the same
// file system, so the rename is as atomic, and durable.SyncDir makes it
// (and any folder created for it) survive a power loss.
//
// An instance whose place is taken (the same calling AE, study, series
// and SOP Instance UID) is compared with the one there, byte for byte as
// the file would be written: the same, it was sent again, and is answered
// success and stored once; other content fails with
// ErrConflictingInstance, and the first is kept. An instance answered
// success is never dropped for another: what takes the place is the file,
// or, before the file is in place, the journal record (a claim).
//
// # Journal
//
// Those two syncs per instance, each a file system commit, are on the
// sender's path: storescu sends the next instance only once this one is
// answered. So while a Serve uses the store (on Linux), the instance is
// written, as it arrives, into a write-ahead journal beside dir
// (.<dir's name>.dimse-journal, a ring of DefaultJournalSize bytes written
// in full once, at creation): one record, the file's bytes with their
// place in the spool and checksums. The record is flushed with one
// fdatasync, which overwrites blocks already allocated and so commits no
// metadata: the instance is durable, and success is answered. A background
// writer (one goroutine, stopped and joined when the last Serve returns)
// puts the file in place within moments (a hidden temporary file copied
// out of the journal, renamed: the watch never sees a part of it); the
// release of an association, and its end otherwise, wait until its files
// are there, so a sender that is done finds them in the spool. The writer
// syncs those files once the sender pauses (or the journal is 5/8 full,
// or a record waited a second), then each folder once, and only then makes
// the journal's space reusable.
//
// NewSpoolStore replays what the journal still holds before it returns,
// so before any association is accepted: a record whose file is missing or
// differs (the process was killed before the file was in place, or the
// power lost before it was synced) is written again, durably, and one
// whose file is whole is left alone; a record torn by a crash is dropped,
// as its sender was never answered. An instance that does not fit in the
// journal's free room, one that arrives while another association is
// writing a record, and every instance where no journal can be kept (see
// WithJournal) are written directly, as described first.
type SpoolStore struct {
	dir string
	log *slog.Logger

	// mu makes "is the place taken, else rename" one step, so that two
	// associations (or an association and the background writer) storing
	// the same instance store it once, and guards ready (folders created
	// and synced by this process) and claims.
	mu     sync.Mutex
	ready  map[string]bool
	claims map[string]*claim

	bufs  sync.Pool // *bufio.Writer
	heads sync.Pool // *[]byte, of jHeadCap: a journal record's first bytes
	hdrs  sync.Pool // *bufio.Reader, of hdrBufSize: placeOf's

	// journal is nil when instances are always written directly.
	journal *journal
	// jmu guards users, stop and stopped: the Serves using the store and
	// its background writer.
	jmu     sync.Mutex
	users   int
	stop    chan struct{}
	stopped chan struct{}
	// hold keeps the background writer from syncing files and freeing
	// journal space, holdAll also from putting files in place (tests):
	// what was answered is durable in the journal only.
	hold, holdAll atomic.Bool
}

// SpoolOption changes how NewSpoolStore sets a SpoolStore up.
type SpoolOption func(*spoolOptions)

type spoolOptions struct {
	journal     string
	journalSize int64
}

// WithJournal puts the store's journal at path (on any local file system;
// "" turns the journal off: each instance is then synced, renamed and its
// folder synced before its answer), size bytes long (0: DefaultJournalSize;
// at least 1 MiB). By default the journal is beside the spool folder; where
// that parent folder is not writable, the store runs without one and logs
// so.
func WithJournal(path string, size int64) SpoolOption {
	return func(o *spoolOptions) { o.journal, o.journalSize = path, size }
}

// NewSpoolStore returns a SpoolStore writing under dir, which must exist.
// Temporary files a previous run left (it was killed mid-instance, whose
// sender was never told success) are removed, and what its journal holds
// is moved into the spool.
func NewSpoolStore(dir string, log *slog.Logger, opts ...SpoolOption) (*SpoolStore, error) {
	log = logger(log)
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool folder %s is not a folder", dir)
	}
	o := spoolOptions{journalSize: DefaultJournalSize}
	if o.journal, err = journalPath(dir); err != nil {
		o.journal = ""
	}
	explicit := false
	for _, opt := range opts {
		opt(&o)
		explicit = true
	}
	if o.journalSize == 0 {
		o.journalSize = DefaultJournalSize
	}
	if o.journalSize < minJournalSize || o.journalSize > maxJournalSize {
		return nil, fmt.Errorf("spool journal size %d is outside %d to %d", o.journalSize, int64(minJournalSize), int64(maxJournalSize))
	}
	stale, err := filepath.Glob(filepath.Join(dir, spoolTempPrefix+"*"+spoolTempSuffix))
	if err != nil {
		return nil, fmt.Errorf("spool folder %s: %w", dir, err)
	}
	for _, f := range stale {
		if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove stale temporary file: %w", err)
		}
		log.Info("removed a partly received instance left by an earlier run", "file", f)
	}
	s := &SpoolStore{dir: dir, log: log, ready: map[string]bool{}, claims: map[string]*claim{}}
	if o.journal == "" || runtime.GOOS != "linux" {
		return s, nil
	}
	size := uint64(o.journalSize) / jBlock * jBlock
	// Replayed before the store is returned, so before Serve accepts an
	// association.
	j, err := openJournal(o.journal, size, s)
	if err != nil {
		if !errors.Is(err, errJournalBusy) && (explicit || s.journalHoldsRecords(o.journal)) {
			// A journal that was there and cannot be read may hold
			// instances answered success: never start without them.
			return nil, fmt.Errorf("spool journal %s: %w", o.journal, err)
		}
		log.Warn("no journal for the spool: each instance is synced before its answer, which is slower", "journal", o.journal, "err", err)
		return s, nil
	}
	s.journal = j
	return s, nil
}

// journalHoldsRecords reports whether a journal file exists at path with a
// valid head, so its records matter.
func (s *SpoolStore) journalHoldsRecords(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	j := &journal{f: f}
	_, ok := j.readHead()
	return ok
}

// Close releases the journal file. A store in use by a Serve must not be
// closed; the agent keeps its stores for the process's life, which closes
// the file as it exits.
func (s *SpoolStore) Close() error {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.users > 0 {
		return errors.New("spool store: closed while serving")
	}
	if s.journal != nil {
		s.journal.close()
		s.journal = nil
	}
	return nil
}

// Store writes in's data set as a Part 10 file (see SpoolStore) and returns
// once it is durable: in the journal, or in the spool.
func (s *SpoolStore) Store(ctx context.Context, in Instance, dataset io.Reader) error {
	if j := s.journal; j != nil && j.w.TryLock() {
		handled, err := s.storeJournal(ctx, j, in, dataset)
		j.w.Unlock()
		if handled {
			return err
		}
	}
	return s.storeDirect(ctx, in, dataset)
}

// writeBufSize is the buffer of an instance being written: a write at
// least as long (a whole PDV of a usual sender, 16 to 128 KiB) goes to the
// file without a copy, shorter ones are gathered.
const writeBufSize = 32 << 10

func (s *SpoolStore) writer(w io.Writer) *bufio.Writer {
	bw, _ := s.bufs.Get().(*bufio.Writer)
	if bw == nil {
		return bufio.NewWriterSize(w, writeBufSize)
	}
	bw.Reset(w)
	return bw
}

func (s *SpoolStore) putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	s.bufs.Put(bw)
}

// jHeadCap is how much of a journal record is kept in memory for placeOf:
// the header of a usual data set, up to its pixel data, fits.
const jHeadCap = 16 << 10

func (s *SpoolStore) headBuf() []byte {
	if b, ok := s.heads.Get().(*[]byte); ok {
		return (*b)[:0]
	}
	return make([]byte, 0, jHeadCap)
}

func (s *SpoolStore) putHeadBuf(b []byte) {
	s.heads.Put(&b)
}

// hdrBufSize is the read buffer of placeOf: dicom.ReadHeader takes a
// *bufio.Reader this large as it is, rather than allocating its own.
const hdrBufSize = 64 << 10

// storeDirect writes the instance into a temporary file and on (finish).
func (s *SpoolStore) storeDirect(ctx context.Context, in Instance, dataset io.Reader) (err error) {
	f, err := os.CreateTemp(s.dir, spoolTempPrefix+"*"+spoolTempSuffix)
	if err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	tmp := f.Name()
	closed := false
	defer func() {
		if err != nil && !closed {
			f.Close()
			os.Remove(tmp)
		}
	}()
	w := s.writer(f)
	defer s.putWriter(w)
	if _, err := WriteFileMeta(w, in); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	n, err := io.Copy(w, dataset)
	if err != nil {
		return fmt.Errorf("store %s after %d bytes: %w", in.SOPInstanceUID, n, err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("store %s: write %s: %w", in.SOPInstanceUID, tmp, err)
	}
	closed = true
	return s.finish(ctx, in, f, n)
}

// finish takes f, the temporary file holding the whole instance (n bytes
// of data set), checks its data set, syncs it, renames it into place and
// syncs the folder. f is closed and, on error, removed.
func (s *SpoolStore) finish(ctx context.Context, in Instance, f *os.File, n int64) (err error) {
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	// The study and series come from the data set itself. ReadHeader stops
	// at the pixel data, reading what the page cache still holds.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	rel, name, err := s.placeOf(in, f)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store %s: sync %s: %w", in.SOPInstanceUID, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store %s: close %s: %w", in.SOPInstanceUID, tmp, err)
	}
	folder := filepath.Join(s.dir, rel)
	target := filepath.Join(folder, name)
	if err := s.makeFolder(rel); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	dup, err := s.place(tmp, target, filepath.ToSlash(filepath.Join(rel, name)), nil)
	if errors.Is(err, ErrConflictingInstance) {
		s.logConflict(in, target, err)
	}
	if err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	// A duplicate syncs the folder too: the first copy's rename may not be
	// synced yet, and success means durable.
	if err := durable.SyncDir(folder); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	if dup {
		s.log.Info("instance received again, kept the first copy", "calling_ae", in.CallingAE, "sop_instance_uid", in.SOPInstanceUID, "file", target)
	} else {
		s.log.Debug("instance stored", "calling_ae", in.CallingAE, "sop_instance_uid", in.SOPInstanceUID, "file", target, "bytes", n)
	}
	return nil
}

// placeOf reads the header of the Part 10 file r and returns where in the
// spool the instance goes: its folder relative to dir, and its file name.
func (s *SpoolStore) placeOf(in Instance, r io.Reader) (rel, name string, err error) {
	br, _ := s.hdrs.Get().(*bufio.Reader)
	if br == nil {
		br = bufio.NewReaderSize(r, hdrBufSize)
	} else {
		br.Reset(r)
	}
	h, err := dicom.ReadHeader(br)
	br.Reset(nil)
	s.hdrs.Put(br)
	if err != nil {
		return "", "", fmt.Errorf("store %s: read the data set: %w: %w", in.SOPInstanceUID, ErrInvalidDataSet, err)
	}
	if h.StudyInstanceUID == "" || h.SeriesInstanceUID == "" {
		return "", "", fmt.Errorf("store %s: the data set has no StudyInstanceUID or SeriesInstanceUID: %w", in.SOPInstanceUID, ErrInvalidDataSet)
	}
	if h.SOPClassUID != in.SOPClassUID {
		return "", "", fmt.Errorf("store %s: SOP class %q in the data set, %s in the command: %w", in.SOPInstanceUID, h.SOPClassUID, in.SOPClassUID, ErrSOPClassMismatch)
	}
	rel = filepath.Join(pathName(in.CallingAE), pathName(h.StudyInstanceUID), pathName(h.SeriesInstanceUID))
	return rel, pathName(in.SOPInstanceUID) + ".dcm", nil
}

// A claim takes an instance's place in the spool from the moment its
// journal record is written until its file is in place: an instance for
// the same place arriving meanwhile, through the journal or directly, is
// compared with the record, as it is with the file later. SpoolStore.mu
// guards the claims.
type claim struct {
	path   string   // the place, as in the record
	f      *os.File // the journal
	off, n int64    // the record's data in f
	// done is closed once the record's flush is over: flushed, or failed,
	// and then the claim was dropped first.
	done chan struct{}
}

// lockPlace locks s.mu once no claim on path but own waits for its flush,
// and returns the claim on path that is not own (flushed), if any.
func (s *SpoolStore) lockPlace(path string, own *claim) *claim {
	for {
		s.mu.Lock()
		c := s.claims[path]
		if c == nil || c == own {
			return nil
		}
		select {
		case <-c.done:
			return c
		default:
		}
		s.mu.Unlock()
		<-c.done
	}
}

// dropClaim gives c up: its record was not flushed.
func (s *SpoolStore) dropClaim(c *claim) {
	s.mu.Lock()
	if s.claims[c.path] == c {
		delete(s.claims, c.path)
	}
	s.mu.Unlock()
	close(c.done)
}

// firstCopy opens the first copy of an instance: the record of claim
// first when not nil, else the file target; found is false when there is
// neither. A place taken by something other than a file holds other
// content: size -1. s.mu held; the caller calls done.
func firstCopy(first *claim, target string) (r io.Reader, size int64, done func(), found bool, err error) {
	if first != nil {
		return io.NewSectionReader(first.f, first.off, first.n), first.n, func() {}, true, nil
	}
	fi, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil, false, nil
	} else if err != nil {
		return nil, 0, nil, false, fmt.Errorf("look for %s: %w", target, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, -1, func() {}, true, nil
	}
	f, err := os.Open(target)
	if err != nil {
		return nil, 0, nil, true, fmt.Errorf("compare with %s: %w", target, err)
	}
	return f, fi.Size(), func() { f.Close() }, true, nil
}

// cmpBufSize is the chunk equalContent compares at a time.
const cmpBufSize = 64 << 10

// equalContent reports whether a and b yield the same bytes to their ends.
func equalContent(a, b io.Reader) (bool, error) {
	ba, bb := make([]byte, cmpBufSize), make([]byte, cmpBufSize)
	for {
		na, erra := io.ReadFull(a, ba)
		if erra != nil && erra != io.EOF && erra != io.ErrUnexpectedEOF {
			return false, erra
		}
		nb, errb := io.ReadFull(b, bb[:na])
		if errb == io.EOF || errb == io.ErrUnexpectedEOF {
			return false, nil // b is shorter
		} else if errb != nil {
			return false, errb
		}
		if !bytes.Equal(ba[:na], bb[:nb]) {
			return false, nil
		}
		if erra != nil {
			// a has ended: so must b.
			var one [1]byte
			switch _, err := io.ReadFull(b, one[:]); err {
			case io.EOF:
				return true, nil
			case nil:
				return false, nil
			default:
				return false, err
			}
		}
	}
}

// sameFileAs reports whether the file name holds the size bytes of r
// (size first, then the bytes).
func sameFileAs(name string, r io.Reader, size int64) (bool, error) {
	f, err := os.Open(name)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if fi.Size() != size {
		return false, nil
	}
	return equalContent(f, r)
}

// conflictError says which instance holds the place of one refused.
func conflictError(target string, first *claim) error {
	if first != nil {
		return fmt.Errorf("%s (still in the journal, not yet in place) holds other content: %w", target, ErrConflictingInstance)
	}
	return fmt.Errorf("%s holds other content: %w", target, ErrConflictingInstance)
}

// logConflict logs an instance refused with ErrConflictingInstance, err,
// with what an operator needs to act: who sent it, its UID, and the
// file already there.
func (s *SpoolStore) logConflict(in Instance, target string, err error) {
	s.log.Error("instance refused: its Study, Series and SOP Instance UIDs are stored already, with other content; the first is kept, the sender told 0111 (duplicate SOP instance)",
		"calling_ae", in.CallingAE, "sop_instance_uid", in.SOPInstanceUID, "file", target, "err", err)
}

// place renames tmp, the whole file of an instance, to target (its place
// in the spool: path, relative, slash form) unless the place is taken: by
// a file, or by another's claim. Then tmp is removed, and dup is true when
// the first copy holds tmp's bytes; an error wrapping
// ErrConflictingInstance says it holds others. own is the claim of the
// record tmp was copied out of (nil for an instance written directly),
// released once tmp is in place or removed.
func (s *SpoolStore) place(tmp, target, path string, own *claim) (dup bool, err error) {
	first := s.lockPlace(path, own)
	defer s.mu.Unlock()
	release := func() {
		if own != nil && s.claims[path] == own {
			delete(s.claims, path)
		}
	}
	r, size, done, found, err := firstCopy(first, target)
	if err != nil {
		return false, err
	}
	if found {
		same, err := sameFileAs(tmp, r, size)
		done()
		if err != nil {
			return false, fmt.Errorf("compare %s with %s: %w", tmp, target, err)
		}
		if err := os.Remove(tmp); err != nil {
			return true, fmt.Errorf("remove %s: %w", tmp, err)
		}
		release()
		if !same {
			return true, conflictError(target, first)
		}
		return true, nil
	}
	if err := os.Rename(tmp, target); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	release()
	return false, nil
}

// replace renames tmp over target (a replay's repair).
func (s *SpoolStore) replace(tmp, target string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.Rename(tmp, target); err != nil {
		return fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	return nil
}

// makeFolder creates dir/rel and each folder on the way, syncing the parent
// of each so that the new entries survive a power loss, once per process
// and folder. It holds mu throughout, so no other store finds a folder that
// exists but whose entry is not yet synced.
func (s *SpoolStore) makeFolder(rel string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ready[rel] {
		return nil
	}
	parent := s.dir
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p := filepath.Join(parent, part)
		if err := os.Mkdir(p, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create folder %s: %w", p, err)
		}
		if err := durable.SyncDir(parent); err != nil {
			return err
		}
		parent = p
	}
	s.ready[rel] = true
	return nil
}

// pathName makes s (an AE title or a UID, both sent by the caller) a safe
// file name: only letters, digits, '.', '-' and '_' stay, anything else
// becomes '_', and it never starts with '.', so it can be neither hidden
// nor a path step (".."), nor a device name Windows reserves (an AE title
// "CON" or "LPT1").
func pathName(s string) string {
	if len(s) > 64 {
		s = s[:64]
	}
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '.', c == '-', c == '_':
		default:
			b[i] = '_'
		}
	}
	if len(b) == 0 {
		return "_"
	}
	if b[0] == '.' {
		b[0] = '_'
	}
	stem, _, _ := strings.Cut(strings.ToUpper(string(b)), ".")
	switch stem {
	case "CON", "PRN", "AUX", "NUL",
		"COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8", "COM9",
		"LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9":
		return "_" + string(b)
	}
	return string(b)
}
