package pull

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"sync"
)

// root confines every file operation of a pull to the output folder.
type root struct{ *os.Root }

func openRoot(dir string) (*root, error) {
	r, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	return &root{r}, nil
}

func mkdirAll(dir string) error { return os.MkdirAll(dir, dirPerm) }

func isNotExist(err error) bool { return errors.Is(err, fs.ErrNotExist) }

// writeAtomic replaces name with data: temp file in the same folder,
// fsync, rename. A reader, and the next pull after a crash, sees the old or
// the new file, never a part of one. The folder is not synced: a rename
// lost in a crash only means the file is written again next time.
func (r *root) writeAtomic(name string, data []byte) error {
	tmp := name + "." + rand.Text()[:8] + ".tmp"
	f, err := r.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return fmt.Errorf("create %s: %w", tmp, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = r.Rename(tmp, name)
	}
	if err != nil {
		_ = r.Remove(tmp)
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

// manifest is the per-item record of downloaded files, kept as
// DIR/<item>/.gcingest-pull.json. The server gives neither sizes nor
// checksums of stored files, so this record is what tells a complete file
// from a stale one on the next pull.
type manifest struct {
	Item  string                   `json:"item"` // item pk the folder belongs to
	Files map[string]manifestEntry `json:"files"`
}

// manifestEntry describes one complete file, by its name in the folder.
type manifestEntry struct {
	Source string `json:"source"` // path of the download URL (image file or value), or a DICOM instance's setSource
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// itemState is the mutable state of one item folder, shared by the workers
// downloading its files.
type itemState struct {
	pk, title, folder string

	mu  sync.Mutex
	man manifest
}

// prepareItem creates the item's folder when it has something to hold,
// loads its manifest and writes values.json. It returns the number of JSON
// values written.
func (p *puller) prepareItem(ip *itemPlan) (int, error) {
	st := ip.state
	st.man = manifest{Item: ip.pk, Files: map[string]manifestEntry{}}
	if len(ip.jobs) == 0 && len(ip.values) == 0 {
		return 0, nil
	}
	where := fmt.Sprintf("item %q (%s)", ip.title, ip.pk)
	if err := p.root.MkdirAll(ip.folder, dirPerm); err != nil {
		return 0, fmt.Errorf("%s: create folder %s: %w", where, ip.folder, err)
	}
	mpath := path.Join(ip.folder, manifestFile)
	if b, err := p.root.ReadFile(mpath); err == nil {
		var m manifest
		// A manifest of another item (the folder name moved to it) or an
		// unreadable one is ignored: its files are downloaded again.
		if json.Unmarshal(b, &m) == nil && m.Item == ip.pk && m.Files != nil {
			st.man = m
		} else {
			p.log.Warn("ignoring download record", "file", mpath)
		}
	} else if !isNotExist(err) {
		return 0, fmt.Errorf("%s: read %s: %w", where, mpath, err)
	}

	if len(ip.values) == 0 {
		return 0, nil
	}
	vpath := path.Join(ip.folder, valuesFile)
	old, err := p.root.ReadFile(vpath)
	if err != nil && !isNotExist(err) {
		return 0, fmt.Errorf("%s: read %s: %w", where, vpath, err)
	}
	vals := map[string]json.RawMessage{}
	if p.filter != nil && len(old) > 0 {
		// A filtered pull adds to what an earlier pull wrote rather than
		// dropping the other sockets' values.
		if err := json.Unmarshal(old, &vals); err != nil {
			vals = map[string]json.RawMessage{}
		}
	}
	for k, v := range ip.values {
		vals[k] = json.RawMessage(v)
	}
	data, err := json.MarshalIndent(vals, "", "  ")
	if err != nil {
		return 0, fmt.Errorf("%s: encode %s: %w", where, vpath, err)
	}
	data = append(data, '\n')
	if !bytes.Equal(old, data) {
		if err := p.root.writeAtomic(vpath, data); err != nil {
			return 0, fmt.Errorf("%s: %w", where, err)
		}
	}
	return len(ip.values), nil
}

// complete reports whether the job's final file is already there and is the
// one the manifest says was downloaded from the same source.
func (p *puller) complete(j *fileJob) (bool, error) {
	return p.completeAt(j.item, j.name, j.source)
}

// completeAt reports whether name (relative to the item's folder) is there
// and is the file the manifest says was downloaded from source.
func (p *puller) completeAt(st *itemState, name, source string) (bool, error) {
	st.mu.Lock()
	e, ok := st.man.Files[name]
	st.mu.Unlock()
	if !ok || e.Source != source {
		return false, nil
	}
	rel := path.Join(st.folder, name)
	fi, err := p.root.Lstat(rel)
	if isNotExist(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !fi.Mode().IsRegular() || fi.Size() != e.Size {
		return false, nil
	}
	if !p.opts.Verify {
		return true, nil
	}
	f, err := p.root.Open(rel)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return false, err
	}
	return hex.EncodeToString(h.Sum(nil)) == e.SHA256, nil
}

// record notes a complete file in the item's manifest.
func (p *puller) record(j *fileJob, size int64, sum string) error {
	st := j.item
	st.mu.Lock()
	defer st.mu.Unlock()
	st.man.Item = st.pk
	st.man.Files[j.name] = manifestEntry{Source: j.source, Size: size, SHA256: sum}
	return p.saveManifestLocked(st)
}

// saveManifestLocked writes the item's manifest; st.mu must be held.
func (p *puller) saveManifestLocked(st *itemState) error {
	data, err := json.MarshalIndent(st.man, "", "  ")
	if err != nil {
		return fmt.Errorf("encode download record: %w", err)
	}
	return p.root.writeAtomic(path.Join(st.folder, manifestFile), append(data, '\n'))
}

// localError marks a failure of the local disk, which retrying the download
// does not fix.
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// fileWriter writes the download to the .part file, hashing and counting.
type fileWriter struct {
	f    *os.File
	name string
	h    hash.Hash
	n    int64
	prog *progress
}

func (w *fileWriter) Write(b []byte) (int, error) {
	n, err := w.f.Write(b)
	w.h.Write(b[:n])
	w.n += int64(n)
	w.prog.addBytes(int64(n))
	if err != nil {
		return n, &localError{fmt.Errorf("write %s: %w", w.name, err)}
	}
	return n, nil
}

// downloadOnce downloads the job's URL into part (truncating whatever is
// there) and syncs it. It returns the size and SHA-256.
func (p *puller) downloadOnce(ctx context.Context, j *fileJob, part string, prog *progress) (int64, string, error) {
	f, err := p.root.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, filePerm)
	if err != nil {
		return 0, "", &localError{fmt.Errorf("create %s: %w", part, err)}
	}
	w := &fileWriter{f: f, name: part, h: sha256.New(), prog: prog}
	if j.set != nil {
		err = p.downloadInstance(ctx, j, w)
	} else {
		_, err = p.c.Download(ctx, j.url, w)
	}
	if err == nil {
		if serr := f.Sync(); serr != nil {
			err = &localError{fmt.Errorf("sync %s: %w", part, serr)}
		}
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = &localError{fmt.Errorf("close %s: %w", part, cerr)}
	}
	if err != nil {
		// Bytes of a failed attempt no longer count as progress.
		prog.addBytes(-w.n)
		return 0, "", err
	}
	return w.n, hex.EncodeToString(w.h.Sum(nil)), nil
}
