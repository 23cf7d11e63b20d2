package dimse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

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
// An instance whose file already exists (the same SOP Instance UID in the
// same series, sent again) is stored once: the first file is kept.
type SpoolStore struct {
	dir string
	log *slog.Logger

	// mu makes "does the target exist, else rename" one step, so that two
	// associations sending the same instance store it once, and guards
	// ready: folders created and synced by this process.
	mu    sync.Mutex
	ready map[string]bool

	bufs sync.Pool // *bufio.Writer
}

// NewSpoolStore returns a SpoolStore writing under dir, which must exist.
// Temporary files a previous run left (it was killed mid-instance, whose
// sender was never told success) are removed.
func NewSpoolStore(dir string, log *slog.Logger) (*SpoolStore, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("spool folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool folder %s is not a folder", dir)
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
	return &SpoolStore{dir: dir, log: log, ready: map[string]bool{}}, nil
}

// Store writes in's data set as a Part 10 file (see SpoolStore) and returns
// once it is durable.
func (s *SpoolStore) Store(ctx context.Context, in Instance, dataset io.Reader) (err error) {
	f, err := os.CreateTemp(s.dir, spoolTempPrefix+"*"+spoolTempSuffix)
	if err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()

	w, _ := s.bufs.Get().(*bufio.Writer)
	if w == nil {
		w = bufio.NewWriterSize(f, 256<<10)
	} else {
		w.Reset(f)
	}
	defer func() { w.Reset(nil); s.bufs.Put(w) }()
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
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}

	// The study and series come from the data set itself. ReadHeader stops
	// at the pixel data, reading what the page cache still holds.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	h, err := dicom.ReadHeader(bufio.NewReaderSize(f, 64<<10))
	if err != nil {
		return fmt.Errorf("store %s: read the data set: %w: %w", in.SOPInstanceUID, ErrInvalidDataSet, err)
	}
	if h.StudyInstanceUID == "" || h.SeriesInstanceUID == "" {
		return fmt.Errorf("store %s: the data set has no StudyInstanceUID or SeriesInstanceUID: %w", in.SOPInstanceUID, ErrInvalidDataSet)
	}
	if h.SOPClassUID != in.SOPClassUID {
		return fmt.Errorf("store %s: SOP class %q in the data set, %s in the command: %w", in.SOPInstanceUID, h.SOPClassUID, in.SOPClassUID, ErrSOPClassMismatch)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store %s: sync %s: %w", in.SOPInstanceUID, tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("store %s: close %s: %w", in.SOPInstanceUID, tmp, err)
	}

	rel := filepath.Join(pathName(in.CallingAE), pathName(h.StudyInstanceUID), pathName(h.SeriesInstanceUID))
	folder := filepath.Join(s.dir, rel)
	target := filepath.Join(folder, pathName(in.SOPInstanceUID)+".dcm")
	if err := s.makeFolder(rel); err != nil {
		return fmt.Errorf("store %s: %w", in.SOPInstanceUID, err)
	}
	dup, err := s.place(tmp, target)
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

// place renames tmp to target unless target exists, in which case tmp is
// removed and dup is true.
func (s *SpoolStore) place(tmp, target string) (dup bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := os.Lstat(target); err == nil {
		if err := os.Remove(tmp); err != nil {
			return true, fmt.Errorf("remove %s: %w", tmp, err)
		}
		return true, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("look for %s: %w", target, err)
	}
	if err := os.Rename(tmp, target); err != nil {
		return false, fmt.Errorf("rename %s to %s: %w", tmp, target, err)
	}
	return false, nil
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
