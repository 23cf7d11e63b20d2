package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
)

// teeReaderAt passes reads through and keeps a copy of every byte read.
type teeReaderAt struct {
	r    io.ReaderAt
	mu   *sync.Mutex
	seen *bytes.Buffer
	once *sync.Once
	hook func()
}

func (t teeReaderAt) ReadAt(b []byte, off int64) (int, error) {
	t.once.Do(t.hook)
	n, err := t.r.ReadAt(b, off)
	t.mu.Lock()
	t.seen.Write(b[:n])
	t.mu.Unlock()
	return n, err
}

// A file renamed over by a symbolic link to a secret while it is being
// sent (ln -s /outside/secret x.new && mv -T x.new drop/x.mha): the secret
// is never read for an upload. Before, the changed size sent the image
// back to hashing, which followed the link and uploaded the secret.
func TestSymlinkSwappedInDuringUploadIsNeverSent(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	secret := append([]byte("SECRET-PATIENT-DATA "), bytes.Repeat([]byte("s"), 3000)...)
	outside := filepath.Join(h.dir, "outside", "secret.mha")
	if err := os.MkdirAll(filepath.Dir(outside), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outside, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	f := h.write("x.mha", gcapitest.SampleMHA(1, 4, 4, 2))
	var mu sync.Mutex
	var sent bytes.Buffer
	swap := func() {
		tmp := filepath.Join(h.watch.Path, "x.new")
		if err := os.Symlink(outside, tmp); err != nil {
			t.Error(err)
		}
		if err := os.Rename(tmp, f.Path); err != nil { // mv -T: rename(2) over the file
			t.Error(err)
		}
	}
	once := new(sync.Once)
	api := hooks{API: h.api, body: func(r io.ReaderAt) io.ReaderAt {
		return teeReaderAt{r: r, mu: &mu, seen: &sent, once: once, hook: swap}
	}}
	p := NewPipeline(h.config(), h.store, h.learning(api), nil)
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, "x.mha", f)); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	leaked := bytes.Contains(sent.Bytes(), []byte("SECRET-PATIENT-DATA"))
	mu.Unlock()
	if leaked {
		t.Error("the symbolic link's target was read for an upload")
	}
	for _, img := range h.srv.Images() {
		if b, err := h.srv.ImageContent(img.PK); err == nil && bytes.Contains(b, []byte("SECRET-PATIENT-DATA")) {
			t.Errorf("the server holds image %s with the secret", img.PK)
		}
	}
	if imgs[0].State == state.Finished {
		t.Errorf("image finished; want it failed (its file became a symbolic link)")
	}
	if b, err := os.ReadFile(outside); err != nil || !bytes.Equal(b, secret) {
		t.Errorf("the secret was touched: %v", err)
	}
	t.Logf("image %s: %s", imgs[0].State, imgs[0].LastError)
}

// rewriteAPI rewrites a file right before the item PATCH: after its upload,
// before its after-upload action.
type rewriteAPI struct {
	API
	once    *sync.Once
	rewrite func()
}

func (a rewriteAPI) UpdateArchiveItem(ctx context.Context, pk string, v []gcapi.ValueUpdate) (*gcapi.ArchiveItem, error) {
	a.once.Do(a.rewrite)
	return a.API.UpdateArchiveItem(ctx, pk, v)
}

// A file rewritten after its upload with the same size and its
// modification time set back (as some exporters and copy tools do) holds
// content the archive does not have: after_upload = "delete" must not
// delete it. Size and modification time alone said it was unchanged.
func TestSameSizeRewriteWithMtimeRestoredIsNotDeleted(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "delete")
	first := gcapitest.SampleMHA(1, 4, 4, 2)
	f := h.write("x.mha", first)
	second := bytes.Clone(first)
	second[len(second)-1] ^= 0xff // same size, other content
	api := rewriteAPI{API: h.api, once: new(sync.Once), rewrite: func() {
		if err := os.WriteFile(f.Path, second, 0o644); err != nil {
			t.Error(err)
		}
		if err := os.Chtimes(f.Path, f.ModTime, f.ModTime); err != nil {
			t.Error(err)
		}
	}}
	p := NewPipeline(h.config(), h.store, h.learning(api), nil)
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, "x.mha", f)); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	got, err := os.ReadFile(f.Path)
	if err != nil {
		t.Fatalf("the rewritten file, never sent, was deleted: %v", err)
	}
	if !bytes.Equal(got, second) {
		t.Error("the drop folder's file is not the rewritten content")
	}
}

// crashOnFailedCommit is a state file whose process dies right after the
// failed image's files were moved, before that is committed.
type crashOnFailedCommit struct {
	*state.Store
	armed atomic.Bool
}

var errDied = errors.New("simulated crash before the commit")

func (s *crashOnFailedCommit) Update(id uint64, fn func(*state.Image) error) (state.Image, error) {
	if s.armed.Load() {
		cur, err := s.Store.Get(id)
		if err == nil {
			probe := cur
			probe.Files = append([]state.File(nil), cur.Files...)
			if fn(&probe) == nil && probe.State == state.Failed && probe.ActionDone && !cur.ActionDone {
				return state.Image{}, errDied
			}
		}
	}
	return s.Store.Update(id, fn)
}

// Two failed images with the same relative path, failed_dir's name clash
// (the second goes to failed_dir/<id>), and a crash between the second's
// move and its commit: a later retry of the second image must bring back
// its own file, never the first image's.
func TestFailedDirClashAndCrashRetryRestoresTheRightFile(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "move")
	h.srv.SetFaults(gcapitest.Faults{FailImport: func([]string) string { return "corrupt image" }})
	// run submits g and runs until its image failed and its files were
	// handled, or until Run ends on its own (the simulated crash).
	run := func(store Store, g Group) error {
		t.Helper()
		p := NewPipeline(h.config(), store, h.learning(h.api), nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		errc := make(chan error, 1)
		go func() { errc <- p.Run(ctx) }()
		if err := p.Submit(ctx, g); err != nil {
			t.Fatal(err)
		}
		var runErr error
		eventually(t, 30*time.Second, "the image failed, its files handled, or the run ended", func() bool {
			select {
			case runErr = <-errc:
				return true
			default:
			}
			all, err := h.store.List()
			if err != nil {
				t.Fatal(err)
			}
			for _, img := range all {
				if img.ID == lastID(all) && img.State == state.Failed && img.ActionDone {
					cancel()
					runErr = <-errc
					return true
				}
			}
			return false
		})
		return runErr
	}
	first := gcapitest.SampleMHA(1, 4, 4, 2)
	if err := run(h.store, h.group(KindSingle, "x.mha", h.write("x.mha", first))); err != nil {
		t.Fatal(err)
	}
	second := gcapitest.SampleMHA(2, 4, 4, 3)
	crashing := &crashOnFailedCommit{Store: h.store}
	crashing.armed.Store(true)
	if err := run(crashing, h.group(KindSingle, "x.mha", h.write("x.mha", second))); !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), errDied.Error()) {
		t.Fatalf("the second run ended with %v; want the simulated crash", err)
	}
	if _, err := os.Stat(filepath.Join(h.watch.Path, "x.mha")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the second image's file was not moved before the crash: %v", err)
	}
	h.reopen()
	crashing.Store = h.store
	crashing.armed.Store(false)
	// The restarted agent finishes the second image's failure handling.
	p := NewPipeline(h.config(), h.store, h.learning(h.api), nil)
	stop := start(p)
	imgs := h.waitSettled(2)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	id := lastID(imgs)
	if _, err := Retry(context.Background(), h.store, []uint64{id}, nil); err != nil {
		t.Logf("retry refused: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(h.watch.Path, "x.mha"))
	if err == nil && !bytes.Equal(got, second) {
		t.Fatal("retry of the second image brought back the first image's file")
	}
	if err != nil {
		t.Errorf("the second image's file is not back in the drop folder: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(h.watch.FailedDir, "x.mha")); err != nil || !bytes.Equal(b, first) {
		t.Errorf("the first image's file is not left in failed_dir: %v", err)
	}
}

func lastID(imgs []state.Image) uint64 {
	var id uint64
	for _, img := range imgs {
		id = max(id, img.ID)
	}
	return id
}

// lookCounter is a context that is cancelled (as by SIGTERM) once it has
// been asked whether it is, after a few looks: the work has started.
type lookCounter struct {
	context.Context
	looks, after int64
}

func (c *lookCounter) Err() error {
	if atomic.AddInt64(&c.looks, 1) > c.after {
		return context.Canceled
	}
	return nil
}

// bigSparse makes a file of size bytes that takes no disk space.
func bigSparse(t *testing.T, name string, size int64) {
	t.Helper()
	f, err := os.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// A stop during a ZIP build, a hash or a cross-device copy of a large file
// is seen between chunks, not at the end of the file: each returns the
// cancellation and leaves nothing half-written behind.
func TestCancelledLargeCopiesStopBetweenChunks(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "big.dcm")
	bigSparse(t, src, 64<<20)
	fi, err := os.Stat(src)
	if err != nil {
		t.Fatal(err)
	}
	rec := state.File{Rel: "s/big.dcm", Path: src, Size: fi.Size(), ModTime: fi.ModTime()}
	t.Run("zip", func(t *testing.T) {
		ctx := &lookCounter{Context: context.Background(), after: 3}
		out := filepath.Join(dir, "spool", "z.zip")
		_, err := writeZip(ctx, out, []state.File{rec})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("writeZip = %v; want context.Canceled", err)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a cancelled ZIP build left %s: %v", out, err)
		}
	})
	t.Run("hash", func(t *testing.T) {
		ctx := &lookCounter{Context: context.Background(), after: 3}
		if _, _, err := hashSource(ctx, src, nil); !errors.Is(err, context.Canceled) {
			t.Fatalf("hashSource = %v; want context.Canceled", err)
		}
	})
	t.Run("cross-device copy", func(t *testing.T) {
		ctx := &lookCounter{Context: context.Background(), after: 3}
		to := filepath.Join(dir, "done", "big.dcm")
		if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := copyMove(ctx, src, to); !errors.Is(err, context.Canceled) {
			t.Fatalf("copyMove = %v; want context.Canceled", err)
		}
		if _, err := os.Stat(src); err != nil {
			t.Errorf("the source of a cancelled move is gone: %v", err)
		}
		if _, err := os.Stat(to); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a cancelled move left %s: %v", to, err)
		}
	})
}

// A file name that is not valid UTF-8 is kept byte for byte in the state
// file: the image uploads (under a valid UTF-8 upload filename), and a
// failed one is moved to failed_dir and back by retry. Through a UTF-8
// conversion the name became another that named no file ("was deleted
// before upload") and retry could not bring it back.
func TestNonUTF8FileName(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "move")
	name := "scan-\xff\xfe.mha"
	var fail atomic.Bool
	fail.Store(true)
	h.srv.SetFaults(gcapitest.Faults{FailImport: func([]string) string {
		if fail.Load() {
			return "corrupt image"
		}
		return ""
	}})
	f := h.write(name, gcapitest.SampleMHA(1, 4, 4, 2))
	p := h.pipeline(h.config())
	stop := start(p)
	if err := p.Submit(context.Background(), h.group(KindSingle, name, f)); err != nil {
		t.Fatal(err)
	}
	imgs := h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].Files[0].Path != f.Path || imgs[0].Files[0].Rel != name {
		t.Fatalf("recorded %q (%q); want %q (%q)", imgs[0].Files[0].Path, imgs[0].Files[0].Rel, f.Path, name)
	}
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "corrupt image") {
		t.Fatalf("image is %s (%s); want failed by the import", imgs[0].State, imgs[0].LastError)
	}
	if _, err := os.Stat(filepath.Join(h.watch.FailedDir, name)); err != nil {
		t.Fatalf("not moved to failed_dir under its own name: %v", err)
	}
	fail.Store(false)
	if _, err := Retry(context.Background(), h.store, []uint64{imgs[0].ID}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f.Path); err != nil {
		t.Fatalf("retry did not bring the file back: %v", err)
	}
	p = h.pipeline(h.config())
	stop = start(p)
	imgs = h.waitSettled(1)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if imgs[0].State != state.Finished {
		t.Fatalf("image is %s (%s); want finished", imgs[0].State, imgs[0].LastError)
	}
	if got := imgs[0].Uploads[0].Filename; !utf8.ValidString(got) || !strings.HasSuffix(got, ".mha") {
		t.Errorf("upload filename %q; want valid UTF-8 ending .mha", got)
	}
	if _, err := os.Stat(filepath.Join(h.watch.DoneDir, name)); err != nil {
		t.Errorf("not moved to done_dir under its own name: %v", err)
	}
	h.checkArchive(1)
}

// A file added to a folder whose record is still being uploaded joins it:
// the folder is planned again with the file, and the item holds its value.
// Before, the second submission was skipped (the record "re-checks its
// files itself", but only the files it had) and the file was dropped.
func TestFileAddedToPendingFolderJoinsIt(t *testing.T) {
	h := newFolderHarness(t, gcapitest.Options{})
	g := h.folder("f", map[string][]byte{
		"ct.mha":      gcapitest.SampleMHA(1, 4, 4, 2),
		"values.json": []byte(`{"lung-volume": 1.5}`),
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := make(chan struct{})
	created := make(chan struct{}, 8)
	var gateOnce sync.Once
	api := hooks{API: h.api,
		created: func(*gcapi.Upload) error { created <- struct{}{}; return nil },
		body: func(r io.ReaderAt) io.ReaderAt {
			held := false
			gateOnce.Do(func() { held = true })
			if !held {
				return r
			}
			return gate{r: r, ctx: ctx, open: open}
		},
	}
	p := NewPipeline(h.config(), h.store, h.learning(api), nil)
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	if err := p.Submit(ctx, g); err != nil {
		t.Fatal(err)
	}
	select {
	case <-created:
	case <-time.After(30 * time.Second):
		t.Fatal("no upload created within 30s")
	}
	overlay := h.write("f/overlay.mha", gcapitest.SampleMHA(2, 4, 4, 2))
	g2 := g
	g2.Files = append(slices.Clone(g.Files), overlay)
	sort.Slice(g2.Files, func(i, j int) bool { return g2.Files[i].Rel < g2.Files[j].Rel })
	if err := p.Submit(ctx, g2); err != nil {
		t.Fatal(err)
	}
	close(open)
	imgs := h.waitSettled(1)
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 1 || imgs[0].State != state.Finished {
		t.Fatalf("records %v; want one, finished", imgs)
	}
	items := h.srv.Items(testArchive)
	if len(items) != 1 {
		t.Fatalf("archive has %d items; want 1", len(items))
	}
	if v := items[0].Value(ifaceOverlay); v == nil || v.Image == nil {
		t.Errorf("item %q has no %s value: the added file was dropped", items[0].Title, ifaceOverlay)
	}
	if v := items[0].Value(testIface); v == nil || v.Image == nil {
		t.Errorf("item %q has no %s value", items[0].Title, testIface)
	}
	for _, u := range h.srv.Uploads() {
		if u.Status == gcapi.UploadInitialized {
			t.Errorf("upload %s (%s) left Initialized", u.PK, u.Filename)
		}
	}
}

func TestEscapedNames(t *testing.T) {
	img := state.Image{Key: "a/scan-\xff.mha", Files: []state.File{{Rel: "a/scan-\xff.mha", Path: "/d/a/scan-\xff.mha"}},
		RawNames: map[string][]byte{"key": []byte("a/scan-\xff.mha")}}
	got := EscapedNames(img)
	if got.Key != `a/scan-\xff.mha` || got.Files[0].Path != `/d/a/scan-\xff.mha` {
		t.Errorf("EscapedNames = %q, %q; want the invalid byte escaped", got.Key, got.Files[0].Path)
	}
	if img.Files[0].Path != "/d/a/scan-\xff.mha" {
		t.Error("EscapedNames changed the record's files")
	}
	if ok := (EscapedNames(state.Image{Key: "ü.mha"})).Key; ok != "ü.mha" {
		t.Errorf("a valid name became %q", ok)
	}
}
