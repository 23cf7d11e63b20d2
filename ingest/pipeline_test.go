package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gcingest/gcingest/gcapi"
	"github.com/gcingest/gcingest/gcapi/gcapitest"
	"github.com/gcingest/gcingest/state"
	"github.com/gcingest/gcingest/watch"
	"go.uber.org/goleak"
)

const (
	testArchive = "scans"
	testIface   = "ct-image"
)

// harness is one fake server, one drop folder and one state file.
type harness struct {
	t         *testing.T
	srv       *gcapitest.Server
	api       *gcapi.Client
	dir       string
	watch     Watch
	statePath string
	store     *state.Store
	learnt    *learnt // upload pks the pipelines were told of
}

func newHarness(t *testing.T, opts gcapitest.Options, after string) *harness {
	t.Helper()
	srv := gcapitest.NewServer(opts)
	t.Cleanup(srv.Close)
	srv.AddArchive(testArchive, "Scans")
	srv.AddInterface(testIface, "Image")
	api, err := gcapi.New(srv.URL, srv.Token(), gcapi.WithHTTPClient(srv.Client()),
		gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 4, BaseDelay: time.Millisecond, MaxDelay: 10 * time.Millisecond}))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	h := &harness{t: t, srv: srv, api: api, dir: dir, statePath: filepath.Join(dir, "state", "state.db"), learnt: &learnt{pks: map[string]bool{}}}
	h.watch = Watch{Spec: watch.Spec{Path: filepath.Join(dir, "drop"), Archive: testArchive, Interface: testIface,
		AfterUpload: watch.AfterUpload(after), DoneDir: filepath.Join(dir, "done"), FailedDir: filepath.Join(dir, "failed")}}
	for _, d := range []string{h.watch.Path, filepath.Dir(h.statePath)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	h.open()
	t.Cleanup(func() { h.store.Close() })
	return h
}

func (h *harness) open() {
	h.t.Helper()
	s, err := state.Open(h.statePath, state.Options{})
	if err != nil {
		h.t.Fatal(err)
	}
	h.store = s
}

func (h *harness) reopen() {
	h.t.Helper()
	if err := h.store.Close(); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

func (h *harness) config() PipelineConfig {
	return PipelineConfig{
		Watches:      []Watch{h.watch},
		SpoolDir:     filepath.Join(filepath.Dir(h.statePath), "spool"),
		Concurrency:  4,
		PollInterval: 5 * time.Millisecond,
		PollMax:      50 * time.Millisecond,
		RetryBase:    5 * time.Millisecond,
		RetryMax:     50 * time.Millisecond,
	}
}

func (h *harness) pipeline(cfg PipelineConfig) *Pipeline {
	return NewPipeline(cfg, h.store, h.learning(h.api), nil)
}

// start runs p until the returned stop is called; stop returns Run's error.
func start(p *Pipeline) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	return func() error {
		cancel()
		return <-errc
	}
}

// write creates a file in the drop folder and returns it as a group file.
func (h *harness) write(rel string, content []byte) File {
	h.t.Helper()
	p := filepath.Join(h.watch.Path, filepath.FromSlash(rel))
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, content, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return h.stat(rel)
}

func (h *harness) stat(rel string) File {
	h.t.Helper()
	p := filepath.Join(h.watch.Path, filepath.FromSlash(rel))
	fi, err := os.Stat(p)
	if err != nil {
		h.t.Fatal(err)
	}
	return File{Path: p, Rel: rel, Size: fi.Size(), ModTime: fi.ModTime()}
}

func (h *harness) group(kind Kind, key string, files ...File) Group {
	return Group{Watch: h.watch.Path, Key: key, Kind: kind, Files: files}
}

// eventually polls cond until it holds, and fails the test, saying what it
// waited for, once timeout has passed without it. cond runs on the
// caller's goroutine and may end the test itself (t.Fatal).
func eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s: it did not happen", timeout, what)
		}
		time.Sleep(2 * time.Millisecond) // polling a condition, not waiting for time
	}
}

// waitRecords polls the state file until cond holds for its records and
// returns them; when it gives up, it logs where each record was.
func (h *harness) waitRecords(timeout time.Duration, what string, cond func([]state.Image) bool) []state.Image {
	h.t.Helper()
	var all []state.Image
	done := false
	defer func() { // eventually gave up and is ending the test
		if !done {
			h.t.Logf("the records: %s", describe(all))
		}
	}()
	eventually(h.t, timeout, what, func() bool {
		var err error
		if all, err = h.store.List(); err != nil {
			h.t.Fatal(err)
		}
		return cond(all)
	})
	done = true
	return all
}

// waitImage polls the state file until it holds one record, which meets
// cond, and returns it.
func (h *harness) waitImage(what string, cond func(state.Image) bool) state.Image {
	h.t.Helper()
	all := h.waitRecords(20*time.Second, "the image "+what, func(all []state.Image) bool {
		return len(all) == 1 && cond(all[0])
	})
	return all[0]
}

// waitSettled polls until every recorded image, at least want of them, has
// nothing left to do.
func (h *harness) waitSettled(want int) []state.Image {
	h.t.Helper()
	return h.waitRecords(60*time.Second, fmt.Sprintf("%d images settled", want), func(all []state.Image) bool {
		settled := 0
		for _, img := range all {
			if !img.Unfinished() {
				settled++
			}
		}
		return settled >= want && settled == len(all)
	})
}

// checkArchive asserts the server's side of exactly-once: every title at
// most once, each wanted title holding an image, no upload left open.
func (h *harness) checkArchive(wantItems int) []gcapitest.ArchiveItem {
	h.t.Helper()
	items := h.srv.Items(testArchive)
	seen := map[string]int{}
	withImage := 0
	for _, it := range items {
		seen[it.Title]++
		if v := it.Value(testIface); v != nil && v.Image != nil {
			withImage++
		}
	}
	for title, n := range seen {
		if n > 1 {
			h.t.Errorf("title %q is on %d items; want 1", title, n)
		}
	}
	if len(items) != wantItems || withImage != wantItems {
		h.t.Errorf("archive has %d items, %d with an image; want %d and %d", len(items), withImage, wantItems, wantItems)
	}
	for _, u := range h.srv.Uploads() {
		if u.Status != gcapi.UploadInitialized {
			continue
		}
		// An upload whose create answer never reached the pipeline (the
		// process died first, or the answer was lost: a 500 or a reset
		// after the server acted) is not the agent's to abort: it never
		// learnt the pk, and the name alone may be another agent's upload.
		// The server deletes it after 24 hours. Every upload the pipeline
		// was told of must be settled.
		if h.learnt.unlearnt(u.PK) {
			h.t.Logf("upload %s (%s) left Initialized: its create's answer never reached the agent", u.PK, u.Filename)
			continue
		}
		h.t.Errorf("upload %s (%s) left Initialized", u.PK, u.Filename)
	}
	// No value replaced: one image per item, and the server made no more
	// images than there are items.
	if n := len(h.srv.Images()); n != wantItems {
		h.t.Errorf("server built %d images; want %d (a value was replaced or imported twice)", n, wantItems)
	}
	return items
}

func TestPipelineLandsEachKindOnce(t *testing.T) {
	// Not parallel: goleak would see the goroutines of every test running.
	h := newHarness(t, gcapitest.Options{}, "move")
	mha := gcapitest.SampleMHA(1, 8, 8, 4)
	hdr, raw := gcapitest.SampleMHDPair(2, 8, 8, 2, "pair.raw")
	groups := []Group{
		h.group(KindSingle, "a/ct.mha", h.write("a/ct.mha", mha)),
		h.group(KindMHD, "b/pair.mhd", h.write("b/pair.mhd", hdr), h.write("b/pair.raw", raw)),
	}
	var dcm []File
	series := gcapitest.SampleDICOMSeries(3)
	for _, name := range slices.Sorted(mapsKeys(series)) {
		dcm = append(dcm, h.write("c/series/"+name, series[name]))
	}
	groups = append(groups, h.group(KindZip, "dicom:1/2/3", dcm...))

	p := h.pipeline(h.config())
	ctx := context.Background()
	for _, g := range groups {
		if err := p.Submit(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	before := goleak.IgnoreCurrent()
	stop := start(p)
	imgs := h.waitSettled(3)
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Keep-alive connections belong to the HTTP client and the fake, not
	// to the pipeline.
	goleak.VerifyNone(t, before,
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))

	for _, img := range imgs {
		if img.State != state.Finished {
			t.Errorf("image %d (%s) is %s (%s); want finished", img.ID, img.Key, img.State, img.LastError)
		}
	}
	items := h.checkArchive(3)
	t.Run("titles", func(t *testing.T) {
		var titles []string
		for _, it := range items {
			titles = append(titles, it.Title)
		}
		for _, prefix := range []string{"a/ct.mha [", "b/pair.mhd [", "c/series ["} {
			if !slices.ContainsFunc(titles, func(s string) bool { return strings.HasPrefix(s, prefix) }) {
				t.Errorf("no item title starts with %q; titles %q", prefix, titles)
			}
		}
	})
	t.Run("single image content", func(t *testing.T) {
		for _, img := range imgs {
			if img.Key != "a/ct.mha" {
				continue
			}
			got, err := h.srv.ImageContent(img.ImagePK)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, mha) {
				t.Errorf("stored image is %d bytes; want the %d bytes dropped", len(got), len(mha))
			}
		}
	})
	t.Run("files moved to done_dir", func(t *testing.T) {
		for _, rel := range []string{"a/ct.mha", "b/pair.mhd", "b/pair.raw", "c/series/IM000001.dcm"} {
			if _, err := os.Stat(filepath.Join(h.watch.DoneDir, filepath.FromSlash(rel))); err != nil {
				t.Errorf("done_dir lacks %s: %v", rel, err)
			}
			if _, err := os.Stat(filepath.Join(h.watch.Path, filepath.FromSlash(rel))); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s still in the drop folder (err %v)", rel, err)
			}
		}
		left, _ := os.ReadDir(h.watch.Path)
		if len(left) != 0 {
			t.Errorf("drop folder not empty: %d entries", len(left))
		}
	})
	t.Run("spool removed", func(t *testing.T) {
		left, _ := os.ReadDir(filepath.Join(filepath.Dir(h.statePath), "spool"))
		if len(left) != 0 {
			t.Errorf("spool folder holds %d files after finishing", len(left))
		}
	})
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestRestartWithNothingNewCreatesNothing(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	var groups []Group
	for i := range 5 {
		rel := fmt.Sprintf("s%d.mha", i)
		groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
	}
	p := h.pipeline(h.config())
	for _, g := range groups {
		if err := p.Submit(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	stop := start(p)
	h.waitSettled(5)
	stop()
	h.checkArchive(5)
	creates := h.srv.Stats().Creates

	// A new process: same state file, the grouper sees the same kept files.
	h.reopen()
	p = h.pipeline(h.config())
	stop = start(p)
	for _, g := range groups {
		if err := p.Submit(context.Background(), g); err != nil {
			t.Fatal(err)
		}
	}
	imgs := h.waitSettled(5)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := h.srv.Stats().Creates; got != creates {
		t.Errorf("creating requests after restart = %d; want %d (none new)", got, creates)
	}
	if len(imgs) != 5 {
		t.Errorf("state holds %d images; want 5", len(imgs))
	}
}

// TestCrashAtEachStep stops the pipeline at the n-th step of any image, as
// a crash would (nothing more written), restarts it on the same state file,
// and repeats with n growing, so every step of every kind is a crash point.
func TestCrashAtEachStep(t *testing.T) {
	for _, faults := range []bool{false, true} {
		t.Run(fmt.Sprintf("faults=%v", faults), func(t *testing.T) {
			h := newHarness(t, gcapitest.Options{Seed: 7}, "move")
			if faults {
				h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.08, Rate500: 0.04, Rate429: 0.04, RateReset: 0.04, RetryAfter: time.Millisecond})
			}
			var groups []Group
			for i := range 6 {
				rel := fmt.Sprintf("d%d/img.mha", i)
				groups = append(groups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2))))
			}
			hdr, raw := gcapitest.SampleMHDPair(9, 4, 4, 2, "p.raw")
			groups = append(groups, h.group(KindMHD, "m/p.mhd", h.write("m/p.mhd", hdr), h.write("m/p.raw", raw)))
			n := 0
			for {
				n++
				var mu sync.Mutex
				steps := 0
				crashed := false
				ctx, cancel := context.WithCancel(context.Background())
				cfg := h.config()
				cfg.BeforeStep = func(id uint64, st state.State) error {
					mu.Lock()
					defer mu.Unlock()
					steps++
					if crashed || steps >= n {
						if !crashed {
							crashed = true
							cancel()
						}
						return errors.New("crash")
					}
					return nil
				}
				p := h.pipeline(cfg)
				errc := make(chan error, 1)
				go func() { errc <- p.Run(ctx) }()
				for _, g := range groups {
					if err := p.Submit(ctx, g); err != nil && ctx.Err() == nil {
						t.Fatal(err)
					}
				}
				if err := waitDone(ctx, h.store, len(groups)); err == nil {
					cancel()
					<-errc
					break
				}
				<-errc
				cancel()
				h.reopen()
				if n > 400 {
					t.Fatal("still not done after 400 crashes")
				}
			}
			h.srv.SetFaults(gcapitest.Faults{})
			imgs := h.waitSettled(len(groups))
			for _, img := range imgs {
				if img.State != state.Finished {
					t.Errorf("image %d is %s (%s); want finished", img.ID, img.State, img.LastError)
				}
			}
			if len(imgs) != len(groups) {
				t.Errorf("state holds %d images; want %d", len(imgs), len(groups))
			}
			h.checkArchive(len(groups))
			t.Logf("%d crashes", n-1)
		})
	}
}

// waitDone waits until all want images are settled or ctx ends.
func waitDone(ctx context.Context, s *state.Store, want int) error {
	for {
		all, err := s.List()
		if err != nil {
			return err
		}
		settled := 0
		for _, img := range all {
			if !img.Unfinished() {
				settled++
			}
		}
		if settled == want && len(all) == want {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Millisecond):
		}
	}
}

func TestFaultsEveryImageOnce(t *testing.T) {
	h := newHarness(t, gcapitest.Options{Seed: 3}, "delete")
	h.srv.SetFaults(gcapitest.Faults{Rate5xx: 0.08, Rate500: 0.04, Rate429: 0.04, RateReset: 0.04, RetryAfter: time.Millisecond})
	p := h.pipeline(h.config())
	const n = 20
	for i := range n {
		rel := fmt.Sprintf("f%02d.mha", i)
		if err := p.Submit(context.Background(), h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	stop := start(p)
	imgs := h.waitSettled(n)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, img := range imgs {
		if img.State != state.Finished {
			t.Errorf("image %d is %s (%s)", img.ID, img.State, img.LastError)
		}
	}
	h.checkArchive(n)
	if left, _ := os.ReadDir(h.watch.Path); len(left) != 0 {
		t.Errorf("after_upload = delete left %d files", len(left))
	}
	if h.srv.Stats().Faults == 0 {
		t.Error("no faults were injected; the test proves nothing")
	}
}

func TestResumeHalfSentUpload(t *testing.T) {
	// Not parallel: goleak would see the goroutines of every test running.
	if testing.Short() {
		t.Skip("64 MiB upload")
	}
	h := newHarness(t, gcapitest.Options{}, "keep")
	content := gcapitest.SampleMHA(1, 1024, 1024, 64) // a whole image: the hash step proves it complete
	size := int64(len(content))
	g := h.group(KindSingle, "big.mha", h.write("big.mha", content))
	cfg := h.config()
	cfg.PartSize = 5 << 20
	cfg.PartConcurrency = 2
	p := h.pipeline(cfg)
	if err := p.Submit(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	before := goleak.IgnoreCurrent()
	go func() { errc <- p.Run(ctx) }()
	eventually(t, 30*time.Second, "half the file to arrive", func() bool { return h.srv.Stats().PartBytes >= size/2 })
	snap, err := p.Snapshot(true)
	if err != nil {
		t.Fatal(err)
	}
	if len(snap) != 1 || !snap[0].Active || snap[0].BytesTotal != size || snap[0].BytesSent <= 0 || snap[0].BytesSent > size {
		t.Errorf("Snapshot during upload = %+v; want one active image with 0 < sent ≤ %d of %d", snap, size, size)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// Cancelled mid-upload: Run left nothing running behind it. The fake
	// server's own connection goroutines (a cut-off part PUT leaves one
	// lingering in closeWriteAndWait for half a second) are not the
	// pipeline's.
	goleak.VerifyNone(t, before,
		goleak.IgnoreAnyFunction("net/http.(*conn).serve"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"))
	img, _ := h.store.List()
	if img[0].State != state.Uploading || img[0].Uploads[0].PK == "" || len(img[0].Uploads[0].Parts) == 0 {
		t.Fatalf("after stop: state %s, upload %+v; want uploading with a pk and parts", img[0].State, img[0].Uploads[0].PK)
	}

	h.reopen()
	p = h.pipeline(cfg)
	stop := start(p)
	h.waitSettled(1)
	stop()
	if got := h.srv.Stats().PartBytes; got >= size*3/2 {
		t.Errorf("sent %d bytes in total for a %d-byte file; want < 1.5×", got, size)
	}
	if n := h.srv.Stats().UploadCreates; n != 1 {
		t.Errorf("uploads created = %d; want 1 (resumed, not restarted)", n)
	}
}

func TestBadInput(t *testing.T) {
	t.Run("zero-byte file fails and is not sent", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "move")
		p := h.pipeline(h.config())
		p.Submit(context.Background(), h.group(KindSingle, "empty.mha", h.write("empty.mha", nil)))
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "empty (0 bytes)") {
			t.Errorf("got %s %q; want failed, empty", imgs[0].State, imgs[0].LastError)
		}
		if h.srv.Stats().UploadCreates != 0 {
			t.Error("an empty file was uploaded")
		}
		note, err := os.ReadFile(filepath.Join(h.watch.FailedDir, "empty.mha.error.txt"))
		if err != nil || !strings.Contains(string(note), "empty") {
			t.Errorf("error note = %q, %v; want the reason beside the file in failed_dir", note, err)
		}
	})
	t.Run("file deleted before upload", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "move")
		p := h.pipeline(h.config())
		f := h.write("gone.mha", gcapitest.SampleMHA(1, 4, 4, 2))
		p.Submit(context.Background(), h.group(KindSingle, "gone.mha", f))
		os.Remove(f.Path)
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "gone.mha was deleted") {
			t.Errorf("got %s %q; want failed, deleted", imgs[0].State, imgs[0].LastError)
		}
	})
	t.Run("file changed after hashing is hashed again", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "keep")
		cfg := h.config()
		f := h.write("c.mha", gcapitest.SampleMHA(1, 4, 4, 2))
		newer := gcapitest.SampleMHA(2, 4, 4, 3)
		var once sync.Once
		cfg.BeforeStep = func(id uint64, st state.State) error {
			if st == state.Uploading {
				once.Do(func() {
					os.WriteFile(f.Path, newer, 0o644)
					os.Chtimes(f.Path, time.Now(), time.Now().Add(time.Hour))
				})
			}
			return nil
		}
		p := h.pipeline(cfg)
		p.Submit(context.Background(), h.group(KindSingle, "c.mha", f))
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Finished {
			t.Fatalf("got %s %q; want finished", imgs[0].State, imgs[0].LastError)
		}
		got, err := h.srv.ImageContent(imgs[0].ImagePK)
		if err != nil || !bytes.Equal(got, newer) {
			t.Errorf("stored %d bytes (%v); want the %d bytes of the changed file", len(got), err, len(newer))
		}
		h.checkArchive(1)
	})
	t.Run("unreadable file", func(t *testing.T) {
		if os.Geteuid() == 0 {
			t.Skip("root reads every file")
		}
		h := newHarness(t, gcapitest.Options{}, "keep")
		f := h.write("locked.mha", gcapitest.SampleMHA(1, 4, 4, 2))
		os.Chmod(f.Path, 0)
		p := h.pipeline(h.config())
		p.Submit(context.Background(), h.group(KindSingle, "locked.mha", f))
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "permission denied") {
			t.Errorf("got %s %q; want failed, permission denied", imgs[0].State, imgs[0].LastError)
		}
	})
	t.Run("import failure", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "move")
		h.srv.SetFaults(gcapitest.Faults{FailImport: func(names []string) string {
			if slices.Contains(names, "bad.mha") {
				return "1 file could not be imported"
			}
			return ""
		}})
		p := h.pipeline(h.config())
		p.Submit(context.Background(), h.group(KindSingle, "x/bad.mha", h.write("x/bad.mha", gcapitest.SampleMHA(1, 4, 4, 2))))
		p.Submit(context.Background(), h.group(KindSingle, "x/good.mha", h.write("x/good.mha", gcapitest.SampleMHA(2, 4, 4, 2))))
		stop := start(p)
		imgs := h.waitSettled(2)
		stop()
		for _, img := range imgs {
			switch img.Key {
			case "x/bad.mha":
				if img.State != state.Failed || !strings.Contains(img.LastError, "1 file could not be imported") {
					t.Errorf("bad: %s %q; want failed with the server's words", img.State, img.LastError)
				}
			case "x/good.mha":
				if img.State != state.Finished {
					t.Errorf("good: %s %q; want finished", img.State, img.LastError)
				}
			}
		}
		if _, err := os.Stat(filepath.Join(h.watch.FailedDir, "x", "bad.mha")); err != nil {
			t.Errorf("failed file not in failed_dir/x: %v", err)
		}
		if _, err := os.Stat(filepath.Join(h.watch.DoneDir, "x", "good.mha")); err != nil {
			t.Errorf("good file not in done_dir/x: %v", err)
		}

		t.Run("retry sends it again", func(t *testing.T) {
			h.srv.SetFaults(gcapitest.Faults{})
			p := h.pipeline(h.config())
			ids, err := p.RetryFailed(context.Background())
			if err != nil || len(ids) != 1 {
				t.Fatalf("RetryFailed = %v, %v", ids, err)
			}
			if _, err := os.Stat(filepath.Join(h.watch.Path, "x", "bad.mha")); err != nil {
				t.Errorf("file not back in the drop folder: %v", err)
			}
			stop := start(p)
			imgs := h.waitSettled(2)
			stop()
			for _, img := range imgs {
				if img.State != state.Finished {
					t.Errorf("image %s: %s %q; want finished", img.Key, img.State, img.LastError)
				}
			}
			items := h.srv.Items(testArchive)
			if len(items) != 2 {
				t.Errorf("archive has %d items; want 2 (the failed item reused)", len(items))
			}
		})
	})
	t.Run("state file write fails", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "keep")
		fs := &failingStore{Store: h.store}
		p := NewPipeline(h.config(), fs, h.api, nil)
		p.Submit(context.Background(), h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2))))
		fs.fail.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := p.Run(ctx)
		if !errors.Is(err, ErrStopped) || !strings.Contains(err.Error(), "no space left") {
			t.Errorf("Run = %v; want ErrStopped saying why", err)
		}
		err = p.Submit(context.Background(), h.group(KindSingle, "b.mha", h.write("b.mha", gcapitest.SampleMHA(2, 4, 4, 2))))
		if !errors.Is(err, ErrStopped) {
			t.Errorf("Submit after a failed write = %v; want ErrStopped", err)
		}
	})
}

func TestDuplicateContentNoSecondItem(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	g := h.group(KindSingle, "dup.mha", h.write("dup.mha", gcapitest.SampleMHA(5, 4, 4, 2)))
	p := h.pipeline(h.config())
	p.Submit(context.Background(), g)
	stop := start(p)
	h.waitSettled(1)
	stop()

	// The state file is lost (moved aside after damage): the same file is
	// seen again by a fresh agent.
	h.loseState()
	p = h.pipeline(h.config())
	p.Submit(context.Background(), g)
	stop = start(p)
	imgs := h.waitSettled(1)
	stop()
	if imgs[0].State != state.Duplicate {
		t.Errorf("state = %s; want duplicate", imgs[0].State)
	}
	h.checkArchive(1)
}

// loseState moves the state file aside, as after damage, and opens a new
// one: a fresh agent sees the same files again.
func (h *harness) loseState() {
	h.t.Helper()
	h.store.Close()
	if err := os.Rename(h.statePath, h.statePath+".damaged"); err != nil {
		h.t.Fatal(err)
	}
	h.open()
}

// failingStore fails every write once fail is set, like a full disk.
type failingStore struct {
	*state.Store
	fail atomic.Bool
}

var errNoSpace = errors.New("write state.db: no space left on device")

func (s *failingStore) Update(id uint64, fn func(*state.Image) error) (state.Image, error) {
	if s.fail.Load() {
		return state.Image{}, errNoSpace
	}
	return s.Store.Update(id, fn)
}

func (s *failingStore) CreateEach(imgs []*state.Image, skip func(int, []state.Image) bool) ([]bool, error) {
	if s.fail.Load() {
		return make([]bool, len(imgs)), errNoSpace
	}
	return s.Store.CreateEach(imgs, skip)
}

// duringUpload runs a function on the file just before the client starts
// sending it, i.e. after the pipeline's own last check.
type duringUpload struct {
	API
	do func(path string)
}

func (a duringUpload) UploadFile(ctx context.Context, f gcapi.FileUpload) (*gcapi.Upload, error) {
	if o, ok := f.Body.(*os.File); ok {
		a.do(o.Name())
	}
	return a.API.UploadFile(ctx, f)
}

func TestFileTouchedDuringUpload(t *testing.T) {
	t.Run("deleted", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "move")
		api := duringUpload{API: h.api, do: func(path string) { os.Remove(path) }}
		p := NewPipeline(h.config(), h.store, api, nil)
		p.Submit(context.Background(), h.group(KindSingle, "del.mha", h.write("del.mha", gcapitest.SampleMHA(1, 4, 4, 2))))
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "del.mha was deleted during upload") {
			t.Errorf("got %s %q; want failed, deleted during upload", imgs[0].State, imgs[0].LastError)
		}
		if len(h.srv.Items(testArchive)) != 0 {
			t.Error("an item was made for a file deleted during its upload")
		}
		h.checkArchive(0)
	})
	t.Run("changed", func(t *testing.T) {
		h := newHarness(t, gcapitest.Options{}, "keep")
		newer := gcapitest.SampleMHA(3, 4, 4, 3)
		var once sync.Once
		api := duringUpload{API: h.api, do: func(path string) {
			once.Do(func() {
				os.WriteFile(path, newer, 0o644)
				os.Chtimes(path, time.Now(), time.Now().Add(time.Hour))
			})
		}}
		p := NewPipeline(h.config(), h.store, api, nil)
		p.Submit(context.Background(), h.group(KindSingle, "ch.mha", h.write("ch.mha", gcapitest.SampleMHA(1, 4, 4, 2))))
		stop := start(p)
		imgs := h.waitSettled(1)
		stop()
		if imgs[0].State != state.Finished {
			t.Fatalf("got %s %q; want finished", imgs[0].State, imgs[0].LastError)
		}
		got, err := h.srv.ImageContent(imgs[0].ImagePK)
		if err != nil || !bytes.Equal(got, newer) {
			t.Errorf("stored %d bytes (%v); want the changed file's %d", len(got), err, len(newer))
		}
		h.checkArchive(1)
	})
}

func TestBackoff(t *testing.T) {
	p := NewPipeline(PipelineConfig{RetryBase: time.Second, RetryMax: time.Minute}, nil, nil, nil)
	tests := []struct {
		attempt int
		base    time.Duration
	}{{1, time.Second}, {2, 2 * time.Second}, {4, 8 * time.Second}, {7, time.Minute}, {1000, time.Minute}}
	for _, tt := range tests {
		for range 50 {
			got := p.cfg.backoff(tt.attempt)
			if got < tt.base*3/4 || got > tt.base*5/4 {
				t.Fatalf("backoff(%d) = %v; want %v ± 25%%", tt.attempt, got, tt.base)
			}
		}
	}
}

func TestUnfinishedWorkGoesFirst(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	old := h.pipeline(h.config())
	for i := range 2 {
		rel := fmt.Sprintf("old%d.mha", i)
		if err := old.Submit(context.Background(), h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(i), 4, 4, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	// A new process: two images recorded before, two new ones.
	h.reopen()
	var mu sync.Mutex
	var order []uint64
	var newGroups []Group
	for i := range 2 {
		rel := fmt.Sprintf("new%d.mha", i)
		newGroups = append(newGroups, h.group(KindSingle, rel, h.write(rel, gcapitest.SampleMHA(int64(10+i), 4, 4, 2))))
	}
	var p *Pipeline
	var once sync.Once
	cfg := h.config()
	cfg.BeforeStep = func(id uint64, _ state.State) error {
		// New work arrives once the run is under way.
		once.Do(func() {
			for _, g := range newGroups {
				if err := p.Submit(context.Background(), g); err != nil {
					t.Error(err)
				}
			}
		})
		mu.Lock()
		defer mu.Unlock()
		if !slices.Contains(order, id) {
			order = append(order, id)
		}
		return nil
	}
	p = h.pipeline(cfg)
	stop := start(p)
	h.waitSettled(4)
	stop()
	mu.Lock()
	defer mu.Unlock()
	if len(order) != 4 || order[0] > 2 || order[1] > 2 {
		t.Errorf("first steps in order of image IDs %v; want the two earlier images (1, 2) before the new ones", order)
	}
	h.checkArchive(4)
}

// SubmitAll records a batch as Submit records each: one group refused for
// what it is (no watch), one already known (same files, recorded before),
// two new ones landing once each, and the refused one named in its error.
func TestSubmitAll(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	p := h.pipeline(h.config())
	known := h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))
	if err := p.Submit(context.Background(), known); err != nil {
		t.Fatal(err)
	}
	bad := Group{Watch: "/elsewhere", Key: "x.mha", Kind: KindSingle, Files: []File{known.Files[0]}}
	batch := []Group{
		known,
		bad,
		h.group(KindSingle, "b.mha", h.write("b.mha", gcapitest.SampleMHA(2, 4, 4, 2))),
		h.group(KindSingle, "c.mha", h.write("c.mha", gcapitest.SampleMHA(3, 4, 4, 2))),
	}
	errs := p.SubmitAll(context.Background(), batch)
	if errs[0] != nil || errs[2] != nil || errs[3] != nil {
		t.Errorf("SubmitAll errors = %v; want nil for the known and the new groups", errs)
	}
	if errs[1] == nil || !strings.Contains(errs[1].Error(), "x.mha") || !strings.Contains(errs[1].Error(), "no watch configured") {
		t.Errorf("the group of no watch got %v; want its key and the reason", errs[1])
	}
	stop := start(p)
	imgs := h.waitSettled(3)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if len(imgs) != 3 {
		t.Fatalf("%d records; want 3 (a once, b, c)", len(imgs))
	}
	for _, img := range imgs {
		if img.State != state.Finished {
			t.Errorf("image %s is %s (%s); want finished", img.Key, img.State, img.LastError)
		}
	}
	h.checkArchive(3)
}

// A backlog bigger than one batch is recorded whole, each group's error
// where it belongs.
func TestSubmitAllBacklog(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	p := h.pipeline(h.config())
	const n, bad = 2*submitBatch + 7, submitBatch + 3
	var gs []Group
	for i := range n {
		rel := fmt.Sprintf("d%04d.mha", i)
		g := h.group(KindSingle, rel, h.write(rel, []byte{byte(i)}))
		if i == bad {
			g.Watch = "/elsewhere"
		}
		gs = append(gs, g)
	}
	errs := p.SubmitAll(context.Background(), gs)
	if len(errs) != n {
		t.Fatalf("%d errors for %d groups", len(errs), n)
	}
	for i, err := range errs {
		if (err != nil) != (i == bad) {
			t.Errorf("group %d: error %v", i, err)
		}
	}
	counts, err := h.store.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if counts[state.Pending] != n-1 {
		t.Errorf("%d images recorded; want %d", counts[state.Pending], n-1)
	}
}

// refusingStore refuses, as the state machine would, the image keyed
// refuse every move out of pending but the one to failed.
type refusingStore struct {
	*state.Store
	refuse string
}

func (s *refusingStore) Update(id uint64, fn func(*state.Image) error) (state.Image, error) {
	before, err := s.Store.Get(id)
	if err != nil {
		return state.Image{}, err
	}
	after := before
	after.Files = slices.Clone(before.Files)
	if err := fn(&after); err != nil {
		return state.Image{}, err
	}
	if before.Key == s.refuse && before.State == state.Pending && after.State != state.Pending && after.State != state.Failed {
		return state.Image{}, &state.TransitionError{ID: id, From: before.State, To: after.State}
	}
	return s.Store.Update(id, fn)
}

// A move the state machine refuses is a bug of gcingest's: that image is
// held with the reason in its record; the pipeline goes on with the rest
// instead of stopping as it does for a disk that cannot be written.
func TestRefusedMoveHoldsOnlyThatImage(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	rs := &refusingStore{Store: h.store, refuse: "a.mha"}
	p := NewPipeline(h.config(), rs, h.api, nil)
	for i, name := range []string{"a.mha", "b.mha"} {
		if err := p.Submit(t.Context(), h.group(KindSingle, name, h.write(name, gcapitest.SampleMHA(int64(i), 4, 4, 2)))); err != nil {
			t.Fatal(err)
		}
	}
	stop := start(p)
	eventually(t, 30*time.Second, "b.mha finished and a.mha held with its reason", func() bool {
		imgs, err := h.store.List()
		if err != nil {
			t.Fatal(err)
		}
		var a, b state.Image
		for _, img := range imgs {
			switch img.Key {
			case "a.mha":
				a = img
			case "b.mha":
				b = img
			}
		}
		return b.State == state.Finished && a.State == state.Pending && strings.Contains(a.LastError, "internal error")
	})
	if err := stop(); err != nil {
		t.Errorf("Run = %v; want the pipeline still running until stopped", err)
	}
}

// An archive the account may view but not add items to: the image fails
// saying so and what to ask for, not with the server's bare "Invalid
// hyperlink - Object does not exist".
func TestViewOnlyArchiveSaysWhatToAskFor(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	h.srv.AddArchiveAccess("viewed", "Viewed", gcapitest.AccessView)
	h.watch.Archive = "viewed"
	imgs := h.runAll(h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2))))
	if imgs[0].State != state.Failed || !strings.Contains(imgs[0].LastError, "may not add items") || !strings.Contains(imgs[0].LastError, "uploader") {
		t.Fatalf("image %s (%s); want failed, saying the account may not add items and to ask for uploader rights", imgs[0].State, imgs[0].LastError)
	}
}

// While the server answers 503 and the client retries a request itself,
// the image shows as retrying from the first failed attempt, with the
// error and when the client tries again, not as "uploading" with nothing
// next; once the server answers, it lands and the note is gone.
func TestClientRetriesShowAsRetrying(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	h.srv.SetFaults(gcapitest.Faults{Rate5xx: 1, PathPrefix: "/api/v1/archives/"})
	var p *Pipeline
	api, err := gcapi.New(h.srv.URL, h.srv.Token(), gcapi.WithHTTPClient(h.srv.Client()),
		gcapi.WithRetry(gcapi.RetryPolicy{MaxAttempts: 1000, BaseDelay: 20 * time.Millisecond, MaxDelay: 20 * time.Millisecond,
			OnRetry: func(ctx context.Context, _, _ string, _ int, wait time.Duration, err error) {
				p.NoteRetry(ctx, wait, err)
			}}))
	if err != nil {
		t.Fatal(err)
	}
	p = NewPipeline(h.config(), h.store, api, nil)
	if err := p.Submit(t.Context(), h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	defer stop()
	eventually(t, 30*time.Second, "the image shown as retrying by the client", func() bool {
		snap, err := p.Snapshot(true)
		if err != nil {
			t.Fatal(err)
		}
		return len(snap) == 1 && !snap[0].ClientRetryAt.IsZero() && strings.Contains(snap[0].ClientRetryErr, "503")
	})
	if got := p.ClientRetrying(); got[state.Uploading] != 1 {
		t.Errorf("ClientRetrying = %v; want the uploading image", got)
	}
	h.srv.SetFaults(gcapitest.Faults{})
	h.waitSettled(1)
	snap, err := p.Snapshot(false)
	if err != nil {
		t.Fatal(err)
	}
	if snap[0].State != state.Finished || !snap[0].ClientRetryAt.IsZero() || len(p.ClientRetrying()) != 0 {
		t.Errorf("after the server came back: %s, client retry %v, %v; want finished and no note", snap[0].State, snap[0].ClientRetryAt, p.ClientRetrying())
	}
}

// No image waits for ever, a bug of ours included: one whose step the
// state machine keeps refusing fails after refusedHolds looks, saying so.
func TestRefusedMoveFailsInTheEnd(t *testing.T) {
	h := newHarness(t, gcapitest.Options{}, "keep")
	rs := &refusingStore{Store: h.store, refuse: "a.mha"}
	cfg := h.config()
	cfg.RefusedHold = time.Millisecond
	p := NewPipeline(cfg, rs, h.api, nil)
	if err := p.Submit(t.Context(), h.group(KindSingle, "a.mha", h.write("a.mha", gcapitest.SampleMHA(1, 4, 4, 2)))); err != nil {
		t.Fatal(err)
	}
	stop := start(p)
	defer stop()
	img := h.waitImage("failed after the refusals", func(img state.Image) bool { return img.State == state.Failed })
	if !strings.Contains(img.LastError, fmt.Sprintf("internal error, %d times", refusedHolds)) || !strings.Contains(img.LastError, "gcingest retry") {
		t.Errorf("failed with %q; want the refusal, how often, and gcingest retry", img.LastError)
	}
}
